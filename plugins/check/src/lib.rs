use respawn_plugin_sdk as _;
