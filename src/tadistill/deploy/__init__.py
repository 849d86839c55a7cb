"""Carrying a student to where it runs: ONNX graphs and their parity checks, int8
quantisation, sentence-transformers layouts and vocabulary trimming."""
