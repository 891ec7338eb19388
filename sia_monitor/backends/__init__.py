"""Where generation happens, behind one interface: the `Backend` protocol and the decoding settings (`base`),
and its first implementation, in-process `transformers.generate` with the hook (`in_process.Monitor`)."""
