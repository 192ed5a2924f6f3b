"""The wire layer: ZJP/1 frames and the msgpack codec, bytes in and bytes out; no sockets."""
