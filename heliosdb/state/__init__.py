"""State backends: memory (``operators.accumulators.Partial``) and RocksDB (``rocksdb``)."""
