from gan.config import PRESETS, resolve


def test_presets_are_listed_with_their_full_specs(client):
    body = client.get("/presets").json()
    names = [preset["name"] for preset in body["presets"]]
    assert names == list(PRESETS)
    assert {"classic", "dcgan", "wgan-gp", "sngan-hinge", "stable", "stable-conditional"} <= set(
        names
    )
    for preset in body["presets"]:
        assert preset["config"] == resolve(preset["name"]).to_dict()
        assert preset["description"]


def test_one_preset_and_an_unknown_one(client):
    stable = client.get("/presets/stable").json()
    assert stable["config"]["loss"] == PRESETS["stable"].config.loss
    response = client.get("/presets/nope")
    assert response.status_code == 404 and "GET /presets" in response.json()["detail"]


def test_a_job_spec_overrides_a_preset_field_by_field(client):
    job = client.post("/jobs", json={"preset": "wgan-gp", "d_steps": 3, "lr_g": 5e-5}).json()
    expected = resolve("wgan-gp", d_steps=3, lr_g=5e-5).to_dict()
    assert job["preset"] == "wgan-gp" and job["config"] == expected
