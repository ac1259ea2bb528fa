"""An in-process Flower Grid: the real ServerApp logic talks to the real ClientApp, no network.

``LocalGrid`` delivers each message the server sends straight to the site's
ClientApp in this process, so the server code, the strategy and the site code
run unchanged.  It is for tests (a site killed mid-round, a reply tampered with
in flight) and for attack simulations (a curious server recording every byte it
receives): the ``tamper`` hook sees every reply before the server does and may
replace or drop it.  Deployment and ``flame demo`` use Flower's own runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from flame_private.federation.site import client_app
from flame_private.federation.site.client_app import make_client_app

Tamper = Callable[[str, Message], Message | None]
"""(site_id, reply) -> the reply to deliver, or None to drop it."""

FIRST_NODE_ID = 1000


_SYNC_ONLY = "the in-process grid only delivers synchronously: the ServerApp uses send_and_receive"

class LocalGrid(Grid):
    """A Grid whose nodes are the given sites, each served by the ClientApp in this process.

    Node ids are ``1000, 1001, ...`` in the order of ``site_yamls``.  A site that
    raises is turned into an error reply, as Flower does.  ``delivered`` lists
    (site id, message type) of every message delivered.
    """

    def __init__(self, site_yamls: dict[str, Path], fed_yaml: Path, tamper: Tamper | None = None) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id = 1  # what Flower's runtime sets before a ServerApp creates messages
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.app = make_client_app()
        self.sites = {FIRST_NODE_ID + i: (sid, path) for i, (sid, path) in enumerate(site_yamls.items())}
        self.contexts = {node: Context(run_id=1, node_id=node,
                                       node_config={"site-config": str(path), "transport": "in-process"},
                                       state=RecordDict(), run_config={"federation-config": str(fed_yaml)})
                         for node, (_, path) in self.sites.items()}
        self.fed_yaml = fed_yaml
        self.tamper = tamper
        self.delivered: list[tuple[str, str]] = []

    def close(self) -> None:
        """Forget the sites the ClientApp loaded for this grid (their secret keys included).

        The ClientApp keeps one ``Site`` per (site config, run config) for the
        life of the process, as a SuperNode would; an attack that is done with a
        federation drops them, so a later run with the same paths loads afresh.
        """
        for _, path in self.sites.values():
            client_app._SITES.pop(f"{path}|{self.fed_yaml}", None)

    def set_run(self, run: Run) -> None:
        pass

    # Grid's asynchronous half (create/push/pull) and the Run record are not used by our ServerApp,
    # which talks only through send_and_receive; they refuse loudly rather than pretend.
    @property
    def run(self) -> Run:
        raise NotImplementedError(_SYNC_ONLY)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        raise NotImplementedError(_SYNC_ONLY)

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError(_SYNC_ONLY)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError(_SYNC_ONLY)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            site_id = self.sites[node][0]
            reply: Message | None
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a crashing site is an error reply, as in Flower
                reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self.delivered.append((site_id, msg.metadata.message_type))
            if self.tamper is not None:
                reply = self.tamper(site_id, reply)
            if reply is not None:
                replies.append(reply)
        return replies
