"""The flows of the commands: short sequences of stage calls sharing one run context."""
