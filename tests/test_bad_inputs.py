"""Bad input is refused before any GPU work, with a message naming the field, the value and what was
expected, and nothing is written to the output (issue 4, item 6)."""

from pathlib import Path

import pytest
import yaml

from dermgen.cli import main

GOOD_ENTRY = {"id": "a", "label": "benign", "prompt": "benign mole", "count": 2}


def manifest_with(**changes):
    return {"name": "m", "model": "tiny", "entries": [{**GOOD_ENTRY, **changes}]}


def write_lora_for_sd15(path: Path) -> Path:
    """An adapter shaped for SD 1.5 (320-wide attention), which the tiny model does not have."""
    import torch
    from safetensors.torch import save_file

    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file(
        {f"{key}.lora_A.weight": torch.zeros(4, 320), f"{key}.lora_B.weight": torch.zeros(320, 4)}, str(path)
    )
    return path


# 556 bytes that expand to a billion nodes when walked (each level nine aliases of the one before).
BILLION_LAUGHS = (
    "name: m\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "entries: *l8\n"
)

# (case id, manifest document or raw YAML text, extra CLI args, exit code, exact error text)
CASES = [
    (
        "malformed_yaml",
        "name: m\nentries: [\n  - id: a\n",
        [],
        2,
        "m.yaml: malformed YAML at line 3, column 3: expected the node content, but found '-'",
    ),
    ("unknown_key", manifest_with(colour="red"), [], 2, "m.yaml: entries[0].colour: unknown key (got 'red')"),
    ("unknown_top_level_key", {**manifest_with(), "seeds": 3}, [], 2, "m.yaml: seeds: unknown key (got 3)"),
    (
        "count_wrong_type",
        manifest_with(count="ten"),
        [],
        2,
        "m.yaml: entries[0].count: Input should be a valid integer, unable to parse string as an integer (got 'ten')",
    ),
    (
        "count_negative",
        manifest_with(count=-3),
        [],
        2,
        "m.yaml: entries[0].count: Input should be greater than 0 (got -3)",
    ),
    (
        "count_zero",
        manifest_with(count=0),
        [],
        2,
        "m.yaml: entries[0].count: Input should be greater than 0 (got 0)",
    ),
    (
        "unknown_sampler",
        manifest_with(samplers=["k_euler"]),
        [],
        2,
        "m.yaml: entries[0].samplers: unknown sampler 'k_euler', expected one of Euler, Euler a, PLMS, DDIM, "
        "DPM++ 2M Karras (got ['k_euler'])",
    ),
    (
        "steps_zero",
        manifest_with(steps=0),
        [],
        2,
        "m.yaml: entries[0].steps: steps must be between 1 and 150 (got 0)",
    ),
    (
        "steps_too_many",
        manifest_with(steps="20-500"),
        [],
        2,
        "m.yaml: entries[0].steps: steps must be between 1 and 150 (got '20-500')",
    ),
    (
        "steps_reversed",
        manifest_with(steps="26-20"),
        [],
        2,
        "m.yaml: entries[0].steps: range start 26 is greater than its end 20 (got '26-20')",
    ),
    (
        "steps_garbage",
        manifest_with(steps="many"),
        [],
        2,
        "m.yaml: entries[0].steps: expected a step count (e.g. 22) or a range like '20-26' (got 'many')",
    ),
    (
        "cfg_out_of_range",
        manifest_with(cfg_scale=50),
        [],
        2,
        "m.yaml: entries[0].cfg_scale: Input should be less than or equal to 30 (got 50)",
    ),
    (
        "size_not_multiple_of_8",
        manifest_with(size=500),
        [],
        2,
        "m.yaml: entries[0].size: sides must be multiples of 8 between 64 and 2048 (got 500)",
    ),
    (
        "size_too_small",
        manifest_with(size=32),
        [],
        2,
        "m.yaml: entries[0].size: sides must be multiples of 8 between 64 and 2048 (got 32)",
    ),
    (
        "bad_label",
        manifest_with(label="atypical"),
        [],
        2,
        "m.yaml: entries[0].label: Input should be 'benign' or 'malignant' (got 'atypical')",
    ),
    (
        "duplicate_ids",
        {"name": "m", "model": "tiny", "entries": [GOOD_ENTRY, GOOD_ENTRY]},
        [],
        2,
        "m.yaml: entries: duplicate entry id 'a'; ids must be unique (got [{'id': 'a', 'label': 'benign', "
        "'prompt': 'benign mole', 'count': 2}, {'id': ...)",
    ),
    (
        "id_escapes_prefix",
        manifest_with(id="../../etc"),
        [],
        2,
        "m.yaml: entries[0].id: must be 1-128 characters of letters, digits, '_', '-', '.', start with a letter or "
        "digit, and contain no '..' or '/' (ids become object keys under the output prefix) (got '../../etc')",
    ),
    (
        "id_absolute_path",
        manifest_with(id="/abs/path"),
        [],
        2,
        "m.yaml: entries[0].id: must be 1-128 characters of letters, digits, '_', '-', '.', start with a letter or "
        "digit, and contain no '..' or '/' (ids become object keys under the output prefix) (got '/abs/path')",
    ),
    (
        "missing_prompt",
        {"name": "m", "entries": [{"id": "a", "label": "benign", "count": 1}]},
        [],
        2,
        "m.yaml: entries[0].prompt: missing required key",
    ),
    (
        "empty_entries",
        {"name": "m", "entries": []},
        [],
        2,
        "m.yaml: entries: List should have at least 1 item after validation, not 0 (got [])",
    ),
    (
        "not_a_mapping",
        "- just\n- a list\n",
        [],
        2,
        "m.yaml: expected a mapping with 'name' and 'entries', got list",
    ),
    (
        "lora_scale_in_manifest",
        manifest_with(loras=[{"path": "x.safetensors", "scale": 5}]),
        [],
        2,
        "m.yaml: entries[0].loras[0].scale: Input should be less than or equal to 2 (got 5)",
    ),
    (
        "missing_model_file",
        manifest_with(),
        ["--model", "{tmp}/nope.safetensors"],
        2,
        "--model: '{tmp}/nope.safetensors' does not exist; expected a preset ('derm-t2im', 'tiny'), a local diffusers "
        "folder or .safetensors file, or an s3:// URI",
    ),
    (
        "pickled_checkpoint",
        manifest_with(),
        ["--model", "{tmp}/model.ckpt"],
        2,
        "--model: '{tmp}/model.ckpt' is a pickled checkpoint, which can run arbitrary code when loaded; expected a "
        ".safetensors file (pass --allow-pickle to load it anyway)",
    ),
    (
        "missing_lora",
        manifest_with(),
        ["--lora", "{tmp}/missing.safetensors:0.5"],
        2,
        "--lora: '{tmp}/missing.safetensors' does not exist; expected a .safetensors LoRA file",
    ),
    (
        "pickled_lora",
        manifest_with(),
        ["--lora", "{tmp}/adapter.bin"],
        2,
        "--lora: '{tmp}/adapter.bin' is a pickled checkpoint, which can run arbitrary code when loaded; expected a "
        ".safetensors file (pass --allow-pickle to load it anyway)",
    ),
    (
        "lora_scale_cli",
        manifest_with(),
        ["--lora", "{tmp}/sd15_lora.safetensors:9"],
        2,
        "--lora: scale 9.0 in '{tmp}/sd15_lora.safetensors:9' is out of range, expected 0 <= scale <= 2",
    ),
    (
        "lora_incompatible",
        manifest_with(),
        ["--lora", "{tmp}/sd15_lora.safetensors"],
        2,
        "--lora: '{tmp}/sd15_lora.safetensors' is incompatible with the base model 'tiny': 2 of 2 adapter tensors do "
        "not fit (first: down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q: adapter input size 320, base "
        "layer 32)",
    ),
    (
        "size_flag",
        manifest_with(),
        ["--size", "100"],
        2,
        "--size: must be a multiple of 8 between 64 and 2048 (got 100)",
    ),
    ("limit_flag", manifest_with(), ["--limit", "0"], 2, "--limit: Input should be greater than 0 (got 0)"),
    (
        "output_not_writable",
        manifest_with(),
        ["--output", "{tmp}/blocker/run"],
        3,
        "--output: '{tmp}/blocker/run' is not writable: Not a directory",
    ),
    (
        "bucket_missing",
        manifest_with(),
        ["--output", "s3://no-such-bucket/run"],
        3,
        "--output: bucket 'no-such-bucket' does not exist (s3://no-such-bucket/run)",
    ),
    (
        "unsupported_scheme",
        manifest_with(),
        ["--output", "gs://bucket/run"],
        3,
        "--output: unsupported URI scheme in 'gs://bucket/run'; expected a local path or s3://bucket/prefix",
    ),
    (
        "duplicate_key",
        "name: m\nmodel: tiny\nentries:\n  - id: a\n    label: benign\n    prompt: mole\n    count: 2\n"
        "    count: 5000\n",
        [],
        2,
        "m.yaml: duplicate key 'count' at line 8 (first at line 7); each key may appear once",
    ),
    (
        "billion_laughs",
        BILLION_LAUGHS,
        [],
        2,
        "m.yaml: YAML anchors/aliases expand 31 nodes to 926,177,117 (73 aliases); a manifest may expand to at "
        "most 100,000 nodes",
    ),
    (
        "count_quoted",
        manifest_with(count="3"),
        [],
        2,
        "m.yaml: entries[0].count: expected a number, got a quoted string (remove the quotes) (got '3')",
    ),
    (
        "count_boolean",
        manifest_with(count=True),
        [],
        2,
        "m.yaml: entries[0].count: expected a number, got a boolean (got True)",
    ),
    (
        "cfg_quoted",
        manifest_with(cfg_scale="7.5"),
        [],
        2,
        "m.yaml: entries[0].cfg_scale: expected a number, got a quoted string (remove the quotes) (got '7.5')",
    ),
    (
        "size_boolean",
        manifest_with(size=True),
        [],
        2,
        "m.yaml: entries[0].size: expected a side in pixels (512), WIDTHxHEIGHT ('512x640') or [width, height] "
        "(got True)",
    ),
    (
        "lora_scale_quoted",
        manifest_with(loras=[{"path": "x.safetensors", "scale": "0.5"}]),
        [],
        2,
        "m.yaml: entries[0].loras[0].scale: expected a number, got a quoted string (remove the quotes) (got '0.5')",
    ),
    (
        "lora_not_safetensors",
        manifest_with(loras=[{"path": "adapter.txt"}]),
        [],
        2,
        "m.yaml: entries[0].loras[0].path: expected a .safetensors LoRA file (not a folder or another format) "
        "(got '{tmp}/adapter.txt')",
    ),
    (
        "manifest_lora_folder",
        manifest_with(loras=[{"path": "lora_dir.safetensors"}]),
        [],
        2,
        "manifest entries[a].loras: '{tmp}/lora_dir.safetensors' is a folder; expected a .safetensors LoRA file "
        "(e.g. the pytorch_lora_weights.safetensors inside it)",
    ),
    (
        "manifest_lora_relative_missing",
        manifest_with(loras=[{"path": "sub/missing.safetensors"}]),
        [],
        2,
        "manifest entries[a].loras: '{tmp}/sub/missing.safetensors' does not exist; expected a .safetensors LoRA "
        "file",
    ),
    (
        "cli_lora_folder",
        manifest_with(),
        ["--lora", "{tmp}/lora_dir.safetensors"],
        2,
        "--lora: '{tmp}/lora_dir.safetensors' is a folder; expected a .safetensors LoRA file (e.g. the "
        "pytorch_lora_weights.safetensors inside it)",
    ),
    (
        "output_with_credentials",
        manifest_with(),
        ["--output", "s3://AKIAEXAMPLE:s3cr3tKEY@bucket/run"],
        2,
        "--output: the s3:// URI carries credentials or a port before the bucket (shown here as "
        "s3://***@bucket/...); pass credentials through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
        "an instance role, never in the URI",
    ),
    (
        "output_with_secret_query",
        manifest_with(),
        ["--output", "s3://bucket/run?aws_secret_access_key=s3cr3tKEY"],
        2,
        "--output: the s3:// URI for bucket 'bucket' has a query string or fragment (not shown, it may hold a "
        "credential); S3 object keys here take no '?' or '#', pass credentials through the environment",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_exact_message(case, tmp_path, capsys, s3_server):
    name, doc, extra, code, expected = case
    manifest = tmp_path / "m.yaml"
    manifest.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    (tmp_path / "adapter.bin").write_bytes(b"pickle")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "lora_dir.safetensors").mkdir()
    write_lora_for_sd15(tmp_path / "sd15_lora.safetensors")
    out = tmp_path / "out"
    args = ["generate", "--manifest", str(manifest), "--output", str(out), "--no-ray"]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if "--model" not in extra:
        args += ["--model", "tiny"]
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.strip() == "error: " + expected.replace("{tmp}", str(tmp_path))
    assert "s3cr3t" not in err  # a credential is never echoed
    assert not out.exists()  # nothing written
    assert len(CASES) >= 20
