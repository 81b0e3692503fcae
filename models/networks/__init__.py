"""Network families, one per file, and the building blocks they share (``resnet22``)."""
