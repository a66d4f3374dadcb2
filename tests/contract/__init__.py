"""Contract suites: one behaviour, checked the same way against every implementation of a port."""

import pytest

pytest.register_assert_rewrite("tests.contract.statestore_contract")
