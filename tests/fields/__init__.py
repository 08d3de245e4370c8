"""One test module per field type (promptproxy/data/fields/), each table-driven."""
