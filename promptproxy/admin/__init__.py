"""The admin at /_/: Flask-Admin over the collections, behind a login."""

from flask import request
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_login import LoginManager

from ..auth import superusers
from ..collections import ALL
from .apis import ApiView
from .home import HomeView, asset_url
from .layout import list_styles, sidebar
from .live import LiveView
from .playground import ConnectionView, PlaygroundView
from .prompts import PromptView
from .requests import RequestView
from .spend import SpendView
from .views import CollectionView, pop_reveal

ADMIN_HEADERS = {
    "X-Frame-Options": "DENY",  # no clickjacking: the admin is never shown in a frame
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # record ids and filters in URLs stay on this server
}


def protect_admin_pages(response):
    if request.path == "/_" or request.path.startswith("/_/"):
        for name, value in ADMIN_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_admin(app):
    login = LoginManager(app)
    login.login_view = "admin.login_view"
    login.user_loader(lambda admin_id: superusers.Superuser.get_or_none(superusers.Superuser.id == admin_id))
    app.jinja_env.globals.update(pop_reveal=pop_reveal, asset_url=asset_url, pp_sidebar=sidebar,
                                 pp_list_styles=list_styles)
    app.after_request(protect_admin_pages)

    admin = Admin(
        app, name="PromptProxy", url="/_",
        index_view=HomeView(name="Dashboard", url="/_", endpoint="admin"),
        theme=Bootstrap4Theme(swatch="default", fluid=True, base_template="promptproxy/base.html"),
    )
    for collection in ALL:
        view = {"apis": ApiView, "prompts": PromptView, "requests": RequestView, "users": SpendView,
                "keys": SpendView}.get(collection.name, CollectionView)
        admin.add_view(view(collection))
    admin.add_view(PlaygroundView(name="Playground", endpoint="playground", url="playground"))
    admin.add_view(LiveView(name="Live log", endpoint="live", url="live"))
    admin.add_view(ConnectionView(name="Test connection", endpoint="connection", url="connection"))
    return admin
