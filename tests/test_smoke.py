def test_device_fixture_has_a_key_and_target(device):
    assert len(device.api_key) >= 43
    assert device.target_state.version == 1
