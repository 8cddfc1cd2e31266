"""The other process of ``test_two_processes_append_densely``:
``python -m chatstate.testing.child TENANT SESSION NAME`` with ``CHATSTATE_CHILD_URL``.

It opens the store at the URL and appends: 30 contested appends with ``expected_seq``
(retrying on conflict, ``NAME:won:i``), 30 plain ones (``NAME:plain:i``) and 30 keyed
ones that the other process sends too (``keyed:k`` under key ``k<k>``). It prints how many
contested appends it won.
"""

from __future__ import annotations

import asyncio
import os
import sys

from chatstate.errors import SeqConflict
from chatstate.model import NewEvent
from chatstate.store.url import open_store


async def main(tenant: str, session: str, name: str) -> int:
    store = await open_store(os.environ["CHATSTATE_CHILD_URL"])
    try:
        won = 0
        for i in range(30):
            while True:
                last = await store.read_last(tenant_id=tenant, session_id=session, n=1)
                head = last[-1].seq if last else 0
                try:
                    await store.append(
                        tenant_id=tenant,
                        session_id=session,
                        events=[NewEvent.message("user", f"{name}:won:{i}")],
                        expected_seq=head,
                    )
                except SeqConflict:
                    continue
                won += 1
                break
            await store.append(
                tenant_id=tenant,
                session_id=session,
                events=[NewEvent.message("user", f"{name}:plain:{i}")],
            )
            await store.append(
                tenant_id=tenant,
                session_id=session,
                events=[NewEvent.message("user", f"keyed:{i}")],
                idempotency_key=f"k{i}",
            )
        return won
    finally:
        await store.close()


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:4])))
