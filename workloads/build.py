"""Builds the bundled workloads, offline and deterministically.

    python workloads/build.py            # digits CNN (float, int8 QDQ/QOperator, int4w) + binary
    python workloads/build.py resnet18   # int8 ResNet-18 (~12 MB, not committed)
    python workloads/build.py all        # both

Every model is trained or drawn from a fixed seed, so a rerun writes the same bytes; accuracies
measured here with onnxruntime go to accuracy.json, which README.md quotes. The digits and
ResNet-18 files are built in a temporary folder and renamed into place, so an interrupted build
leaves no half-written model (binary_digits.build writes its own files).
Other code imports the modules next to this file (put workloads/ on sys.path): cnn_digits.build,
resnet18.build(out_dir) and binary_digits.build all take the folder to write into.
"""

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import cnn_digits
import resnet18

HERE = Path(__file__).resolve().parent
ACCURACY_FILE = "accuracy.json"


def _build_into(out_dir: Path, builder) -> dict:
    """Runs builder(tmp) in a temporary folder under out_dir, then renames its files into place."""
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        result = builder(Path(tmp))
        for path in sorted(Path(tmp).iterdir()):
            os.replace(path, out_dir / path.name)
    return result


def build_binary(out_dir: Path) -> dict | None:
    """The binary network, if binary_digits.py (written separately) is there yet.

    It writes straight into out_dir, so that any paths it returns name the final files.
    """
    if importlib.util.find_spec("binary_digits") is None:
        print(
            "binary network skipped: workloads/binary_digits.py does not exist yet",
            file=sys.stderr,
        )
        return None
    import binary_digits

    return binary_digits.build(out_dir)


def _plain(value):
    """numpy scalars and paths (which a builder may return) as JSON values; a path by its name,
    so that the JSON does not depend on where the build ran."""
    if isinstance(value, Path):
        return value.name
    return value.item() if hasattr(value, "item") else str(value)


def record_accuracy(out_dir: Path, key: str, values: dict) -> None:
    """Merges one model family's accuracies into accuracy.json (sorted, so stable bytes)."""
    path = out_dir / ACCURACY_FILE
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = values
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True, default=_plain) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "target", nargs="?", default="default", choices=["default", "resnet18", "all"]
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    args = parser.parse_args(argv)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # onnxruntime.quantization suggests pre-processing on every call; it is noise here.
    logging.getLogger().setLevel(logging.ERROR)

    status = 0
    if args.target in ("default", "all"):
        acc = _build_into(out_dir, cnn_digits.build)
        record_accuracy(out_dir, "digits_cnn", acc)
        for name, value in acc.items():
            print(f"{name}: test accuracy {value:.4f}")
        binary = build_binary(out_dir)
        if binary is None:
            status = 1
        else:
            record_accuracy(out_dir, "binary_digits", binary)
            print(f"binary_digits: {json.dumps(binary, sort_keys=True, default=_plain)}")
    if args.target in ("resnet18", "all"):
        path = resnet18.build(out_dir)
        print(f"{path.name}: built ({path.stat().st_size} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
