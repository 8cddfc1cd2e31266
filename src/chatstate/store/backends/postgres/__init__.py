"""PostgreSQL backend (``[postgres]`` extra). See :mod:`.store`."""
