"""The fault matrix (docs/reliability.md): one module per fault family, on real components. The live
API fixtures are the API tests' own."""

from tests.api.conftest import api, api_server  # noqa: F401  (fixtures)
