"""The test projects: settings variants, URL confs and the test apps they install."""
