"""Wire protocols: Open Inference Protocol v2 request and response codecs."""
