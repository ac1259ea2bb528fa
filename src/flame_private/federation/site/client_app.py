"""The site's Flower ClientApp: unpack the message, call the site, pack the reply.

Each handler is one protocol step of ``site.Site``, which runs the factories of
``task`` (model, data, train, evaluate: the ``task.py`` of Flower's templates)
under the site's privacy rule.  Which site this node is
comes from the node config (``site-config`` in deployment) or, in simulation,
from the partition id indexing the run's list of site configs.  How its
messages travel (recorded in the site's egress log) is the node config's
``transport`` when given, else ``simulation`` for a simulated node and
``supernode`` for a deployed one.

Nothing a site did not decide to send leaves it.  Flower turns an exception
raised in a ClientApp into an error reply carrying the exception's text, and a
site's errors name its files, folders and patients.  So every handler runs
under ``_guarded``: an unexpected error is logged in full at the site, recorded
in its egress log as a decline, and the server gets the plain "declined" that
any decline sends; a site that cannot even load (its egress log unreadable, its
key unsafe) replies with a fixed error text that says nothing about the site.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from flame_private.federation.protocol import (
    METRICS,
    MODEL,
    STATUS,
    UPDATE,
    ct_record,
    read_ct_record,
    read_instruction,
)
from flame_private.federation.site.site import Reply, Site
from flame_private.records.egress import TRANSPORTS, Transport

log = logging.getLogger(__name__)
_SITES: dict[str, Site] = {}


def _site(context: Context, site_yamls: list[Path] | None, fed_yaml: Path | None) -> Site:
    """The Site for this node, loaded once per process (Ray workers serve several rounds)."""
    if "site-config" in context.node_config:
        site_yaml = Path(str(context.node_config["site-config"]))
    elif site_yamls is not None:
        site_yaml = site_yamls[int(context.node_config["partition-id"])]
    else:
        site_yaml = Path(str(context.run_config["site-configs"]).split(",")[int(context.node_config["partition-id"])])
    fed = fed_yaml or Path(str(context.run_config["federation-config"]))
    key = f"{site_yaml}|{fed}"
    if key not in _SITES:
        torch.set_num_threads(max(1, int(context.node_config.get("torch-threads", 1))))
        _SITES[key] = Site.load(site_yaml, fed, transport=_transport(context))
    return _SITES[key]


def _transport(context: Context) -> Transport:
    """The node config's declared ``transport``, else what the node's config shows: simulated or deployed."""
    given = context.node_config.get("transport")
    if given is not None:
        if given not in TRANSPORTS:
            raise ValueError(f"node config transport={given!r}: expected one of {', '.join(TRANSPORTS)}")
        return given  # type: ignore[return-value]
    return "simulation" if "partition-id" in context.node_config else "supernode"


def _reply(site: Site, reply: Reply, msg: Message) -> Message:
    content = RecordDict({STATUS: ConfigRecord({STATUS: reply.status_json(site.site_id)})})
    if reply.header_json is not None and reply.payload is not None:
        content[UPDATE] = ct_record(reply.header_json, reply.payload)
    return Message(content, reply_to=msg)


SITE_FAILED = "the site could not take part; the reason is in the site's own log"
"""The only text that leaves a site that failed to load: fixed, so it says nothing about the site."""
SITE_FAILED_CODE = ErrorCode.CLIENT_APP_RAISED_EXCEPTION

Step = Callable[[Site, Message], Reply]


def _failed(msg: Message) -> Message:
    """The fixed error reply of a site that cannot take or record the step."""
    return Message(Error(code=SITE_FAILED_CODE, reason=SITE_FAILED), reply_to=msg)


def _guarded(step: Step, site_yamls: list[Path] | None, fed_yaml: Path | None
             ) -> Callable[[Message, Context], Message]:
    """``step`` as a Flower handler that lets no exception, and so no exception text, reach the server."""

    def handler(msg: Message, context: Context) -> Message:
        try:
            site = _site(context, site_yamls, fed_yaml)
        except Exception:
            log.exception("this site could not load and takes no part; the server gets a fixed error text")
            return _failed(msg)
        try:
            return _reply(site, step(site, msg), msg)
        except Exception as exc:
            log.exception("%s: %s step failed", site.site_id, msg.metadata.message_type)
            try:  # recorded in the egress log like any decline, when the instruction and the log allow
                ins = read_instruction(msg.content)
                reason = f"{msg.metadata.message_type} step failed: {type(exc).__name__}: {exc}"
                return _reply(site, site.decline(ins.run_id, ins.round, ins.task, reason), msg)
            except Exception:
                log.exception("%s: the failed step could not be recorded as a decline; the server gets a fixed "
                              "error text", site.site_id)
                return _failed(msg)

    return handler


def _train(site: Site, msg: Message) -> Reply:
    ins = read_instruction(msg.content)
    header, payload = read_ct_record(msg.content[MODEL]) if ins.has_model else (None, None)  # type: ignore[arg-type]
    return site.train_round(ins.run_id, ins.task, ins.round, header, payload, start=ins.start)


def _evaluate(site: Site, msg: Message) -> Reply:
    ins = read_instruction(msg.content)
    header, payload = read_ct_record(msg.content[MODEL])  # type: ignore[arg-type]
    return site.evaluate_round(ins.run_id, ins.task, ins.round, header, payload)


def _finish(site: Site, msg: Message) -> Reply:
    ins = read_instruction(msg.content)
    model = read_ct_record(msg.content[MODEL])  # type: ignore[arg-type]
    metrics = read_ct_record(msg.content[METRICS]) if METRICS in msg.content else None  # type: ignore[arg-type]
    return site.finish(ins.run_id, ins.task, ins.round, model, metrics, ins.metrics_round)


def make_client_app(site_yamls: list[Path] | None = None, fed_yaml: Path | None = None) -> ClientApp:
    """A ClientApp; explicit site configs (simulation) or from node/run config (deployment)."""
    app = ClientApp()
    app.train()(_guarded(_train, site_yamls, fed_yaml))
    app.evaluate()(_guarded(_evaluate, site_yamls, fed_yaml))
    app.query()(_guarded(_finish, site_yamls, fed_yaml))
    return app


app = make_client_app()
