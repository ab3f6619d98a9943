"""records.inputs: what the inputs hold: folders, zips and CSV tables listed as (name, label)
sources, the label rules, and the unlabelled listing that `predict` reads."""
