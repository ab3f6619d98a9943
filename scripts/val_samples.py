r"""Writes a few validation images (never trained on) from a records directory to a folder.

  python scripts/val_samples.py --records_dir=build/records --output_dir=build/demo/samples

Half cats, half dogs, under their original file names (cat.1234.jpg), so `predict`'s
output shows the true label next to P(dog). Each is a copy of the original photo where
the records came from a folder, else the JPEG stored in the records (a zip, a table).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from core import settings

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplesConfig:
    records_dir: str = setting(help="Directory made by make_records.")
    output_dir: str = setting(help="Folder to write the images to (emptied of .jpg first).")
    split: str = setting("val", "Split to take them from.")
    per_class: int = setting(4, "Images per class.", minimum=1)

    def __post_init__(self):
        settings.check(self)


def main(config: SamplesConfig) -> int:
    import tensorflow as tf

    from records import schema
    from records.manifest import Manifest

    manifest = Manifest.load(config.records_dir)
    with open(manifest.path) as f:
        inputs = [os.path.abspath(path) for path in json.load(f)["settings"]["inputs"]]
    wanted = {label: config.per_class for label in range(len(manifest.class_names))}
    os.makedirs(config.output_dir, exist_ok=True)
    for name in os.listdir(config.output_dir):
        if name.endswith(".jpg"):
            os.remove(os.path.join(config.output_dir, name))
    written = []
    for serialized in tf.data.TFRecordDataset(manifest.split(config.split).paths):
        example = schema.parse_example(serialized)
        label = int(example[schema.LABEL])
        if wanted.get(label, 0) == 0:
            continue
        wanted[label] -= 1
        relative = example[schema.FILENAME].numpy().decode()
        name = os.path.basename(relative)
        # A folder input's names are relative to the folder's parent (records.inputs.sources).
        originals = [os.path.join(os.path.dirname(path), relative) for path in inputs]
        original = next((path for path in originals if os.path.isfile(path)), None)
        if original:
            shutil.copyfile(original, os.path.join(config.output_dir, name))
        else:
            with open(os.path.join(config.output_dir, name), "wb") as f:
                f.write(example[schema.ENCODED].numpy())
        written.append(name)
        if not any(wanted.values()):
            break
    print(f"wrote {len(written)} {config.split} images to {config.output_dir}: {' '.join(written)}")
    return 0


if __name__ == "__main__":
    settings.run(SamplesConfig, main, __name__)
