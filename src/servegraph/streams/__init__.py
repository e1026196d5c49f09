"""Queue backends (memory, Redis Streams, NATS JetStream) behind one small interface."""
