"""records: labelled JPEGs -> sharded TFRecords with a manifest (the `make_records` command)."""
