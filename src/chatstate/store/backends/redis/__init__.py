"""Redis and Redis Cluster backend, and the Redis tier (``[redis]`` extra). See :mod:`.store`
and :mod:`.tiered`."""
