"""A run's live state in Redis: data access only, below the orchestration in `runs/`.

    client.py   connect_redis, and the helpers that type its replies as `str`
    status.py   RunStatus, the lifecycle a run's status follows
    record.py   RunRecord (the run hash, typed) and its API JSON body
    state.py    RunState: the atomic Lua scripts of turnstream/lua/, and plain reads
    stream.py   StreamHub: following run streams, one subscriber per process

Nothing here imports `turnstream.runs`, `turnstream.runtime`, `turnstream.api` or
`turnstream.agents`, nor `turnstream.store` (the layer contract in pyproject.toml,
checked by `lint-imports`): those build on this package, or beside it.
"""
