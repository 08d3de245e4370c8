"""The apis table: a "Test connection" link on every row and details page, and
each api's state as the proxy sees it: cooling down until when, and its recent
errors (see accounting/upstreams.py), with a button to end a cooldown early."""

import time
from typing import ClassVar

from flask import flash, g, redirect, request, url_for
from flask_admin import expose
from flask_admin.model.template import EndpointLinkRowAction
from markupsafe import Markup

from ..services import services
from .views import CollectionView


def when(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def upstream_state():
    """Every api's state, read once per page; None when it cannot be read now."""
    if "upstream_state" not in g:
        try:
            g.upstream_state = services().upstreams.state()
        except Exception:  # noqa: BLE001 -- the counts' database is down: the page still shows
            g.upstream_state = None
    return g.upstream_state


def state_cell(view, context, row, name):
    states = upstream_state()
    if states is None:
        return Markup('<span class="text-muted">unknown</span>')
    state = states.get(row.id)
    if state and state["until"]:
        return Markup('<span class="badge badge-warning" title="until {}">cooling down</span>').format(
            when(state["until"]))
    if state and state["failures"]:
        return Markup('<span class="badge badge-light">{} failed in the last minute</span>').format(
            state["failures"])
    return Markup('<span class="badge badge-success">ready</span>')


class ApiView(CollectionView):
    details_template = "promptproxy/api_details.html"
    column_extra_row_actions: ClassVar[list] = [  # Flask-Admin wants a list
        EndpointLinkRowAction("fa fa-plug", "connection.check", title="Test connection", id_arg="api_id")]

    def __init__(self, collection, **kwargs):
        super().__init__(collection, **kwargs)
        self.column_list.insert(self.column_list.index("active"), "state")
        self.column_labels["state"] = "State"
        self.column_descriptions["state"] = ("Whether calls are sent to this api now, or skipped while it cools "
                                             "down after failures.")
        self.column_formatters["state"] = state_cell
        self._refresh_cache()  # Flask-Admin works out its columns in __init__

    @expose("/details/")
    def details_view(self):
        states = upstream_state()
        state = None if states is None else states.get(request.args.get("id", ""), {})
        self._template_args.update(upstream=state, when=when)
        return super().details_view()

    @expose("/cooldown/", methods=("POST",))
    def end_cooldown(self):
        """End an api's cooldown now (after fixing it, say): the next call may use it."""
        api_id = request.form.get("id", "")
        services().upstreams.clear(api_id)
        flash("The cooldown has ended: the next call may use this api.", "success")
        return redirect(url_for(".details_view", id=api_id))
