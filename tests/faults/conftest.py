"""The fault matrix (docs/reliability.md): one module per fault family, on real components. The live
API and Temporal fixtures are the API and integration tests' own."""

from tests.api.conftest import api, api_server  # noqa: F401  (fixtures)
from tests.integration.conftest import dev_server, temporal_env  # noqa: F401  (fixtures)
