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
        assert preset["data_kind_examples"] == {"images": "mnist", "points": "grid25"}
        for kind, dataset in preset["data_kind_examples"].items():
            expected = resolve(preset["name"], dataset=dataset).to_dict()
            assert preset["by_data_kind"][kind] == expected
        assert preset["by_data_kind"]["points"]["arch"] == "mlp"


def test_one_preset_and_an_unknown_one(client):
    stable = client.get("/presets/stable").json()
    assert stable["config"]["loss"] == PRESETS["stable"].config.loss
    response = client.get("/presets/nope")
    assert response.status_code == 404 and "GET /presets" in response.json()["detail"]


def test_a_job_spec_overrides_a_preset_field_by_field(client):
    job = client.post("/jobs", json={"preset": "wgan-gp", "d_steps": 3, "lr_g": 5e-5}).json()
    expected = resolve("wgan-gp", d_steps=3, lr_g=5e-5).to_dict()
    assert job["preset"] == "wgan-gp" and job["config"] == expected


def test_stable_is_accepted_for_points_with_nothing_else_set(client):
    response = client.post("/jobs", json={"preset": "stable", "dataset": "grid25"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["config"] == resolve("stable", dataset="grid25").to_dict()
    assert job["config"]["arch"] == "mlp" and job["config"]["latent_dim"] == 8
    assert job["config"]["loss"] == "hinge"  # the image recipe's, on the point MLPs
    stable = client.get("/presets/stable").json()
    assert job["config"] == stable["by_data_kind"]["points"] | {"dataset": "grid25"}
    refused = client.post("/jobs", json={"preset": "stable", "dataset": "grid25", "arch": "dcgan"})
    assert refused.status_code == 422 and "arch" in refused.text
