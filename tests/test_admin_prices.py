"""Test connection suggests the known prices of well-known models, which the admin
confirms by ticking them: never set unasked, never over prices of the admin's own."""

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db
from promptproxy.services import services

from .conftest import csrf_token


def model_row(model_id):
    models = BY_NAME["models"].model
    with db.connection_context():
        return models.get(models.model == model_id)


def prices_of(model_id):
    row = model_row(model_id)
    return row.input_price, row.cached_input_price, row.output_price


@pytest.fixture
def page(admin, gateway):
    url = f"/_/connection/{gateway.api.id}"
    return url, admin.get(url).get_data(as_text=True)


def test_known_prices_are_suggested_beside_the_upstream_models(page):
    _, text = page
    assert 'name="price" value="gpt-4o-mini"> use the known prices 0.15 / 0.075 / 0.6' in text  # already a model
    assert 'name="price" value="gpt-3.5-turbo-instruct"> use the known prices 1.5 / — / 2' in text
    assert prices_of("gpt-4o-mini") == (None, None, None)  # suggested, not set


def test_ticked_prices_are_set_on_models_added_and_on_those_without_prices(admin, gateway, page):
    url, _ = page
    admin.post(url, data={"csrf_token": csrf_token(admin, url), "model": "gpt-3.5-turbo-instruct",
                          "price": ["gpt-3.5-turbo-instruct", "gpt-4o-mini"]})
    after = admin.get(url).get_data(as_text=True)
    assert "Added 1 model: gpt-3.5-turbo-instruct (with its known prices)." in after
    assert "Set the known prices of gpt-4o-mini." in after
    assert prices_of("gpt-3.5-turbo-instruct") == (1.5, None, 2.0)
    assert prices_of("gpt-4o-mini") == (0.15, 0.075, 0.6)
    assert 'name="price"' not in after  # both priced now: shown, no longer suggested
    assert '<span class="model-prices">0.15 / 0.075 / 0.6</span>' in after
    gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert gateway.rows(1)[0].cost == pytest.approx((1 * 0.15 + 2 * 0.6) / 1e6, abs=1e-15)  # 1 token in, 2 out


def test_unticked_prices_and_the_admins_own_are_left_alone(admin, gateway, page):
    url, _ = page
    gateway.update("models", gateway.model, output_price=0.5)
    admin.post(url, data={"csrf_token": csrf_token(admin, url), "model": "gpt-3.5-turbo-instruct",
                          "price": "gpt-4o-mini"})
    assert prices_of("gpt-3.5-turbo-instruct") == (None, None, None)
    assert prices_of("gpt-4o-mini") == (None, None, 0.5)


def test_no_suggestions_in_another_currency(admin, gateway):
    services(gateway.app).settings["CURRENCY"] = "EUR"
    url = f"/_/connection/{gateway.api.id}"
    text = admin.get(url).get_data(as_text=True)
    assert "EUR per million tokens" in text and 'name="price"' not in text
    admin.post(url, data={"csrf_token": csrf_token(admin, url), "price": "gpt-4o-mini"})
    assert prices_of("gpt-4o-mini") == (None, None, None)
