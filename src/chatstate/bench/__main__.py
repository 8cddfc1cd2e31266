"""``python -m chatstate.bench store [options]``."""

import sys

from chatstate.bench import context, load, overload, peers, store

BENCHES = {
    "store": store.main,
    "context": context.main,
    "peers": peers.main,
    "load": load.main,
    "overload": overload.main,
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        print(
            f"usage: python -m chatstate.bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr
        )
        return 2
    return BENCHES[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
