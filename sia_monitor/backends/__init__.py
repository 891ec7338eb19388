"""Where generation happens, behind one interface: the `Backend` protocol and the decoding settings (`base`),
its first implementation, in-process transformers with the hook (`in_process.Monitor`), and the decoding loop
it runs, in which finished rows leave the batch (`decode`)."""
