"""Local state: stores (RocksDB, in-memory), the uncommitted overlay, state directories."""
