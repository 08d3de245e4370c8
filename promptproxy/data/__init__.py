"""The database and everything written to it: the schema and its migrations, the
writer thread every write runs on, the field types and collections that declare
records, the one way to save a record, the catalog the proxy reads, and the
encryption of what is stored."""
