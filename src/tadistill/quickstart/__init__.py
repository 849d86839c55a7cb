"""Parts of the offline quickstart: a text corpus found on any Python install, and metrics that
compare a student's sentence embeddings with its teacher's."""
