"""Regenerate releases.json: the torch_npu op schemas of each release halinfer declares.

Usage (needs bare or full clones of Ascend/pytorch and Ascend/op-plugin):

    python tests/vendors/emulation/npu/regen_releases.py PYTORCH_GIT OP_PLUGIN_GIT > releases.json

For each release branch of Ascend/pytorch it reads the op-plugin commit pinned in
``third_party/op-plugin``, the release's ``version.txt``, and then, at that commit:
- ``op_plugin/config/op_plugin_functions.yaml``: the ``func:`` schema of every op in
  OPS, keeping the entry whose ``op_api`` / ``acl_op`` version list includes the
  release's torch minor version (the file holds one entry per signature generation);
- ``op_plugin/ops/atb/*.cpp``: the ``m.def("...")`` schemas of the ATB ops in ATB_OPS;
- ``op_plugin/python/atb/_atb_ops.py``: ``API_LIST``, the lazily wrapped ``torch_npu._npu_*``.
The format ops (empty_with_format, npu_format_cast, get_npu_format) come from the
release branch's own ``torch_npu/csrc/aten/npu_native_functions.yaml``.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import yaml

# torch_npu release branches inside halinfer's declared range (plugins/ascend/versions.py)
RELEASES = ["v2.5.1-7.0.0", "v2.5.1-7.1.0", "v2.6.0-7.1.0", "v2.6.0-7.2.0", "v2.6.0-7.3.0", "v2.7.1-7.2.0",
            "v2.7.1-7.3.0", "v2.8.0-7.2.0", "v2.8.0-7.3.0", "v2.9.0-7.3.0", "v2.7.1-26.0.0", "v2.7.1-26.1.0",
            "v2.8.0-26.0.0", "v2.9.0-26.0.0", "v2.9.0-26.1.0"]
# the ops the Ascend plugin calls, and the ones it may fall back to
OPS = ["npu_rms_norm", "npu_add_rms_norm", "npu_apply_rotary_pos_emb", "npu_swiglu", "npu_dynamic_quant",
       "npu_quant_matmul", "npu_weight_quant_batchmatmul", "npu_moe_gating_top_k_softmax", "npu_moe_init_routing",
       "npu_moe_init_routing_v2", "npu_grouped_matmul", "npu_moe_token_permute", "npu_moe_token_unpermute",
       "npu_moe_finalize_routing", "npu_moe_compute_expert_tokens", "npu_fused_infer_attention_score",
       "npu_fused_infer_attention_score.out", "_npu_fused_infer_attention_score_get_max_workspace"]
FORMAT_OPS = ["empty_with_format", "npu_format_cast", "get_npu_format"]
ATB_OPS = ["_npu_reshape_and_cache", "_npu_paged_attention", "_npu_flash_attention", "_npu_flash_attention_unpad"]


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout


def versions_of(spec, all_versions: list[str]) -> list[str]:
    """'all_version' | 'v2.0' | 'v1.11, v2.0' | [v2.1, newest] (a range) -> explicit versions."""
    if spec == "all_version":
        return all_versions
    if isinstance(spec, list):
        lo, hi = spec
        hi = all_versions[-1] if hi == "newest" else hi
        return all_versions[all_versions.index(lo):all_versions.index(hi) + 1]
    return [v.strip() for v in str(spec).split(",")]


def op_name(func: str) -> str:
    return func.split("(", 1)[0]


def yaml_schemas(text: str, wanted: list[str], torch_minor: str) -> dict[str, str]:
    doc = yaml.safe_load(text)
    all_versions = doc.get("all_version", [])
    out: dict[str, str] = {}
    for section, entries in doc.items():
        if not isinstance(entries, list):
            continue
        for e in entries:
            if not isinstance(e, dict) or op_name(e.get("func", "")) not in wanted:
                continue
            specs = [e[k] for k in ("op_api", "acl_op") if k in e]
            if not specs or any(torch_minor in versions_of(s, all_versions) for s in specs):
                out.setdefault(op_name(e["func"]), e["func"])
    return out


def atb_schemas(repo: str, commit: str) -> dict[str, str]:
    out = {}
    for path in git(repo, "ls-tree", "-r", "--name-only", commit, "op_plugin/ops/atb/").split():
        for schema in re.findall(r'm\.def\("([^"]+)"\)', git(repo, "show", f"{commit}:{path}")):
            if op_name(schema) in ATB_OPS:
                out[op_name(schema)] = schema
    return out


def atb_api_list(repo: str, commit: str) -> list[str]:
    tree = ast.parse(git(repo, "show", f"{commit}:op_plugin/python/atb/_atb_ops.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "API_LIST":
            return [ast.literal_eval(x) for x in node.value.elts]
    return []


def main(pytorch: str, op_plugin: str) -> dict:
    releases, op_sets = {}, {}
    for branch in RELEASES:
        commit = git(pytorch, "ls-tree", branch, "third_party/op-plugin").split()[2]
        version = git(pytorch, "show", f"{branch}:version.txt").strip()
        minor = "v" + ".".join(branch[1:].split("-")[0].split(".")[:2])
        key = f"{commit[:9]}/{minor}"
        if key not in op_sets:
            ops = yaml_schemas(git(op_plugin, "show", f"{commit}:op_plugin/config/op_plugin_functions.yaml"),
                               OPS, minor)
            ops.update(yaml_schemas(git(pytorch, "show", f"{branch}:torch_npu/csrc/aten/npu_native_functions.yaml"),
                                    FORMAT_OPS, minor))
            op_sets[key] = {"ops": dict(sorted(ops.items())), "atb": atb_schemas(op_plugin, commit),
                            "atb_api_list": atb_api_list(op_plugin, commit)}
        releases[branch] = {"torch_npu": version, "torch": branch[1:].split("-")[0],
                            "pytorch_commit": git(pytorch, "rev-parse", branch).strip(), "op_plugin": commit,
                            "op_set": key}
    # releases whose op sets are identical share one entry (named after the first of them)
    first: dict[str, str] = {}
    for key in list(op_sets):
        same = first.setdefault(json.dumps(op_sets[key], sort_keys=True), key)
        if same != key:
            del op_sets[key]
            for r in releases.values():
                r["op_set"] = same if r["op_set"] == key else r["op_set"]
    return {"source": "Ascend/pytorch third_party/op-plugin pins; Ascend/op-plugin "
                      "op_plugin/config/op_plugin_functions.yaml, op_plugin/ops/atb/*.cpp, "
                      "op_plugin/python/atb/_atb_ops.py; Ascend/pytorch torch_npu/csrc/aten/npu_native_functions.yaml",
            "generated_by": "tests/vendors/emulation/npu/regen_releases.py", "releases": releases, "op_sets": op_sets}


if __name__ == "__main__":
    json.dump(main(sys.argv[1], sys.argv[2]), sys.stdout, indent=1)
    sys.stdout.write("\n")
