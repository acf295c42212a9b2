"""Files bundled with segdesk, installed as the package ``segdesk.resources`` (pyproject.toml maps
this folder there). Code finds them through ``segdesk.bundled.resource_path``."""
