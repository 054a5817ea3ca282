"""apt.core.lazy: names a package imports on first use."""

from __future__ import annotations

import pytest

from apt.core.lazy import lazy_attributes
from tests.helpers import assert_runs


def test_a_name_is_imported_from_its_module_when_first_asked():
    getattr_ = lazy_attributes("pkg", {"OrderedDict": "collections", "sqrt": "math"})
    import collections
    import math

    assert getattr_("OrderedDict") is collections.OrderedDict and getattr_("sqrt") is math.sqrt
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'nope'"):
        getattr_("nope")


def test_packages_that_re_export_torch_classes_import_no_torch_until_asked():
    code = ("import sys\n"
            "import apt.modeling, apt.moe, apt.training, apt.data, apt.optim\n"
            "import apt.providers.attention, apt.providers.ffn, apt.providers.router, apt.providers.moe\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "from apt.providers.ffn import SwiGLU\n"
            "assert 'torch' in sys.modules and SwiGLU.__module__ == 'apt.providers.layers.ffn'\n")
    assert_runs(code)
