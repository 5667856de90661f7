"""Per-backend operator conformance suite.

Every op of ``halinfer.core.ops.Ops`` is run for every provider (installed
backends, plus ``extra_providers/*``; see providers.py for the interface) on
fresh random inputs, and compared with the core reference computed in float32
on the CPU from the same inputs.  Files:

  providers.py        Provider dataclass, collecting providers
  params.py           parametrizing a test over providers x dtypes x cases
  checks.py           tolerances per dtype, poisoning, untouched-input checks
  kvbuild.py          paged caches and steps, written independently of core/ops/paged.py
  test_<op group>.py  conformance tests, and independent checks of the reference
  test_attention_reference.py  the attention reference vs SDPA and a float64 loop
  test_suite_catches_bugs.py   planted bugs each check must catch
  test_metadata.py    metadata builders describe the step and do not alias it
  hnd_plugin/         a test-only vendor plugin (HND layout, host-side int32 lengths)
  tempdist.py         installing a plugin from a temporary distribution
  test_plugin_loading.py, test_device_resolution.py, test_hnd_plugin.py

Run:  python -m pytest tests/conformance -q
      HALINFER_CONFORMANCE_PROVIDERS=cpu,hndsim   only these providers (fnmatch patterns allowed)
      HALINFER_CONFORMANCE_SEED=7                 another draw of the random inputs
"""
