"""deep.conf: defaults, creation, relative model paths, net and model errors."""
import configparser

import pytest

from deep_spectrum_extractor.backend.networks import resolve_model
from deep_spectrum_extractor.config import DEFAULT_CONFIG_PATH, load_config
from deep_spectrum_extractor.errors import ConfigError, ModelError


def test_shipped_config_matches_the_original_defaults():
    config = load_config(DEFAULT_CONFIG_PATH)
    assert (config.size, config.gpu, config.backend) == (227, True, "tensorflow")
    # download_alexnet.sh writes deep-spectrum/AlexNet.pb, the file the config names
    assert config.net("alexnet").path == DEFAULT_CONFIG_PATH.parents[2] / "AlexNet.pb"
    assert config.net("AlexNet").default_layer == "fc7"
    assert config.net("efficientnet_lite0").default_layer == "global_pool"


def test_missing_config_is_created_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_SPECTRUM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "sub" / "my.conf"
    config = load_config(path)
    assert path.is_file()
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser["main"]["size"] == "227" and parser["main"]["backend"] == "tensorflow"
    # the new file points at the same models as the shipped one
    assert config.net("alexnet").path == load_config(DEFAULT_CONFIG_PATH).net("alexnet").path
    assert config.net("efficientnet_lite0").path == tmp_path / "cache" / "efficientnet_lite0.pb"


def test_model_paths_are_relative_to_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "deep.conf").write_text("[main]\nsize = 100\ngpu = 0\nbackend = tensorflow\n"
                                      "[tensorflow-nets]\nMyNet = models/x.pb\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/deep.conf")
    assert config.size == 100 and config.gpu is False
    assert config.net("mynet").path == folder / "models" / "x.pb"


def test_unknown_net_lists_the_available_ones(small_config):
    with pytest.raises(ModelError, match=r"net 'vgg99' is not defined in .*deep.conf; "
                                         r"available: alexnet, missing, small"):
        load_config(small_config).net("vgg99")


def test_missing_alexnet_tells_both_ways_forward(tmp_path):
    path = tmp_path / "deep.conf"
    path.write_text("[main]\n[tensorflow-nets]\nalexnet = AlexNet.pb\n")
    with pytest.raises(ModelError) as info:
        resolve_model(load_config(path), "alexnet")
    message = str(info.value)
    assert str(tmp_path / "AlexNet.pb") in message
    assert "download_alexnet.sh" in message and "-net efficientnet_lite0" in message


@pytest.mark.parametrize("text,match", [
    ("[tensorflow-nets]\na = b.pb\n", "no \\[main\\] section"),
    ("[main]\nbackend = caffe\n[tensorflow-nets]\n", "backend 'caffe' is not supported"),
    ("[main]\nsize = big\n[tensorflow-nets]\n", "size"),
    ("[main]\nsize = 227\n", "no \\[tensorflow-nets\\] section"),
    ("not an ini file", "cannot read config file"),
])
def test_bad_configs_name_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_keras_networks_in_deep_conf_match_the_exporter(tmp_path, monkeypatch):
    """deep.conf's Keras entries and default layers agree with convert-models' table."""
    import keras_export

    config = load_config(DEFAULT_CONFIG_PATH)
    for name, network in keras_export.NETWORKS.items():
        entry = config.net(name)
        assert entry.default_layer == network.default_layer, name
        assert entry.path.name == f"{name}.pb"
    monkeypatch.setenv("DEEP_SPECTRUM_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="export_keras.py resnet50 -o .*resnet50.pb"):
        resolve_model(load_config(DEFAULT_CONFIG_PATH), "resnet50")
