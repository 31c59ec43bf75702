"""The model on CPU with tiny configs: shapes of every head combination, the legal mask, value
head width and prior, init directories (round trip, policy-only, upgrade with a value head,
refusals), and a backward pass."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from lab2048.engine import Board, legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.model import (
    ILLEGAL_LOGIT,
    EvBins,
    Model,
    ModelConfig,
    ValueHeadConfig,
    legal_moves,
    load_init,
    mask_illegal,
    move_logits,
    move_probs,
    save_init,
    torch_device,
)
from lab2048.model.heads import prior_probs
from lab2048.value_transform import Support, h, h_inverse, two_hot

SUPPORT = Support(0.0, 60.0, 31)
VALUE_HEADS = {
    "none": ValueHeadConfig(),
    "mse-mean": ValueHeadConfig(enabled=True, objective="mse", pooling="mean"),
    "mse-attention-nomlp": ValueHeadConfig(enabled=True, objective="mse", pooling="attention",
                                           pre_pool_mlp=False),
    "ce-mean-nomlp": ValueHeadConfig(enabled=True, pooling="mean", pre_pool_mlp=False,
                                     support=SUPPORT),
    "ce-attention": ValueHeadConfig(enabled=True, pooling="attention", support=SUPPORT),
}
BINS = EvBins((0.0, 0.5, 2.0, 10.0))


def tiny(policy_head="action_policy", value_head="none", **kw) -> ModelConfig:
    return ModelConfig(hidden=32, layers=2, heads=4, kv_heads=2, mlp=64, ev_bins=BINS.bins,
                       policy_head=policy_head, value_head=VALUE_HEADS[value_head], **kw)


def tokens(n=6, seed=0):
    return torch.randint(0, 18, (n, 16), generator=torch.Generator().manual_seed(seed))


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return Model(cfg, BINS if cfg.policy_head == "binned_ev" else None).eval()


@pytest.mark.parametrize("value_head", VALUE_HEADS)
@pytest.mark.parametrize("policy_head", ["action_policy", "binned_ev"])
def test_forward_shapes_for_every_head_combination(policy_head, value_head):
    cfg = tiny(policy_head, value_head, position="row_col" if "mean" in value_head else "learned")
    model = build(cfg)
    hidden, policy, value = model(tokens())
    assert hidden.shape == (6, 16, 32)
    assert policy.shape == ((6, 4) if policy_head == "action_policy" else (6, 4, 6))
    vh = cfg.value_head
    if not vh.enabled:
        assert value is None and model.value is None
    elif vh.objective == "mse":
        assert value.shape == (6,)
    else:
        assert value.shape == (6, SUPPORT.n)
        assert model.value.out.out_features == SUPPORT.n
    pred = model.predict(tokens(), np.full(6, 15, np.uint8))
    assert pred.move_probs.shape == (6, 4)
    torch.testing.assert_close(pred.move_probs.sum(-1), torch.ones(6))
    assert (pred.value is None) == (not vh.enabled)
    if vh.enabled:
        assert pred.value.shape == pred.value_xform.shape == (6,)
        assert model(tokens(), with_value=False)[2] is None


def test_value_head_width_is_the_support_size():
    for n in (2, 51, 601):
        cfg = dataclasses.replace(tiny(), value_head=ValueHeadConfig(
            enabled=True, support=Support(0.0, 600.0, n)))
        assert Model(cfg).value.out.out_features == n


def test_mask_illegal_for_every_bitmask():
    bits = np.arange(16, dtype=np.uint8)
    logits = torch.randn(16, 4)
    before = logits.clone()
    masked = mask_illegal(logits, bits)
    assert torch.equal(logits, before)
    legal = legal_moves(torch.from_numpy(bits))
    for b in range(16):
        for d in range(4):
            assert bool(legal[b, d]) == bool(b >> d & 1)
            expected = logits[b, d] if b >> d & 1 else ILLEGAL_LOGIT
            assert masked[b, d] == expected
    assert torch.equal(mask_illegal(logits, torch.from_numpy(bits)), masked)


def test_move_probs_are_zero_for_illegal_moves_and_for_boards_without_one():
    bits = np.arange(16, dtype=np.uint8)
    logits = torch.randn(16, 4) * 30
    probs = move_probs(logits, bits)
    legal = legal_moves(bits)
    assert not probs.isnan().any() and (probs[~legal] == 0).all()
    assert torch.equal(probs[0], torch.zeros(4))  # no legal move: nothing to choose
    torch.testing.assert_close(probs[1:].sum(-1), torch.ones(15))
    for b in range(1, 16):  # the softmax over the legal moves alone
        torch.testing.assert_close(probs[b, legal[b]], torch.softmax(logits[b, legal[b]], -1))


def test_predict_on_engine_boards_never_proposes_illegal_moves():
    grids = [[[2, 2, 0, 0], [0] * 4, [0] * 4, [0] * 4],  # all but up
             [[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 4, 2]],  # no legal move
             [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 65536]]]
    boards = [Board.from_tiles(g) for g in grids]
    bits = np.array([b.bits for b in boards], np.uint64)
    masks = np.array([b.mask for b in boards], np.uint16)
    legal = legal_masks(bits, masks)
    model = build(tiny())
    pred = model.predict(to_exponents(bits, masks), legal)
    for i, board in enumerate(boards):
        allowed = {int(m) for m in board.legal_moves()}
        for d in range(4):
            assert (pred.move_probs[i, d] > 0) == (d in allowed)  # none legal: all 0


def test_binned_ev_move_scores_are_log_p_winner():
    out = torch.randn(3, 4, 7)
    torch.testing.assert_close(move_logits(out, "binned_ev"), torch.log_softmax(out, -1)[..., -1])
    assert move_logits(out[..., 0], "action_policy") is not None


@pytest.mark.parametrize("objective", ["mse", "cross_entropy"])
@pytest.mark.parametrize("prior", [0.0, 3.5, 2500.0])
def test_fresh_value_head_decodes_to_the_prior(objective, prior):
    cfg = dataclasses.replace(tiny(), value_head=ValueHeadConfig(
        enabled=True, objective=objective, prior=prior, reward_scale=0.5))
    pred = build(cfg).predict(tokens(), np.full(6, 15, np.uint8))
    torch.testing.assert_close(pred.value, torch.full((6,), prior), rtol=1e-4, atol=0.05)


def test_config_json_round_trip_and_policy_only_configs(tmp_path):
    cfg = tiny("binned_ev", "ce-attention", position="row_col")
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    path = tmp_path / "config.json"
    data = json.loads(tiny().to_json())
    del data["value_head"]
    path.write_text(json.dumps(data))
    loaded = ModelConfig.from_json(path)
    assert loaded == tiny() and not loaded.value_head.enabled
    _, policy, value = Model(loaded)(tokens())
    assert policy.shape == (6, 4) and value is None


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d.update(layers="2"), "layers must be int"),
    (lambda d: d.update(heads=3), "must divide"),
    (lambda d: d["value_head"].update(objective="l1"), "value_head.objective"),
    (lambda d: d["value_head"]["support"].update(n=1), "at least 2 atoms"),
    (lambda d: d["value_head"]["support"].update(extra=1), "'value_head.support.extra'"),
])
def test_bad_configs_are_one_line_errors_naming_the_file(tmp_path, edit, message):
    data = json.loads(tiny().to_json())
    edit(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as e:
        ModelConfig.from_json(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("policy_head", ["action_policy", "binned_ev"])
@pytest.mark.parametrize("value_head", ["none", "mse-attention-nomlp", "ce-attention"])
def test_save_then_load_gives_identical_outputs(tmp_path, policy_head, value_head):
    model = build(tiny(policy_head, value_head))
    save_init(model, tmp_path / "init", extra_json={"training-config.json": {"steps": 1}})
    files = {p.name for p in (tmp_path / "init").iterdir()}
    assert files == {"config.json", "model.safetensors", "training-config.json"} | (
        {"tokenizer.json"} if policy_head == "binned_ev" else set())
    loaded = load_init(tmp_path / "init")
    assert loaded.cfg == model.cfg and loaded.bins == model.bins and not loaded.training
    for a, b in zip(model(tokens()), loaded(tokens()), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["init"]  # no temporary leftovers


def test_save_refuses_to_replace_without_overwrite(tmp_path):
    first, second = build(tiny(), seed=1), build(tiny(), seed=2)
    save_init(first, tmp_path / "init")
    with pytest.raises(UserError, match="exists"):
        save_init(second, tmp_path / "init")
    assert torch.equal(load_init(tmp_path / "init")(tokens())[1], first(tokens())[1])
    save_init(second, tmp_path / "init", overwrite=True)
    assert torch.equal(load_init(tmp_path / "init")(tokens())[1], second(tokens())[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


@pytest.mark.parametrize("value_head", ["mse-mean", "ce-attention"])
def test_policy_only_init_upgraded_with_a_value_head_keeps_its_policy(tmp_path, value_head):
    policy_only = build(tiny())
    save_init(policy_only, tmp_path / "init")
    upgraded_cfg = dataclasses.replace(tiny(), value_head=dataclasses.replace(
        VALUE_HEADS[value_head], prior=1000.0))
    upgraded = load_init(tmp_path / "init", config=upgraded_cfg)
    hidden, policy, value = upgraded(tokens())
    ref_hidden, ref_policy, _ = policy_only(tokens())
    assert torch.equal(hidden, ref_hidden) and torch.equal(policy, ref_policy)
    assert value is not None
    pred = upgraded.predict(tokens(), np.full(6, 15, np.uint8))
    torch.testing.assert_close(pred.value, torch.full((6,), 1000.0), rtol=1e-3, atol=0.5)
    # saved again, the value head comes back as trained (the prior is not a reason to reset)
    with torch.no_grad():
        upgraded.value.out.bias.add_(1.0)
    save_init(upgraded, tmp_path / "upgraded")
    again = load_init(tmp_path / "upgraded",
                      config=dataclasses.replace(upgraded_cfg, value_head=dataclasses.replace(
                          upgraded_cfg.value_head, prior=5.0)))
    assert torch.equal(again(tokens())[2], upgraded(tokens())[2])
    # and loaded policy-only, the value head is dropped
    assert load_init(tmp_path / "upgraded", config=tiny())(tokens())[2] is None


def test_load_refuses_a_different_trunk_and_bad_files(tmp_path):
    init = tmp_path / "init"
    save_init(build(tiny("binned_ev")), init)
    with pytest.raises(UserError, match="layers differ"):
        load_init(init, config=dataclasses.replace(tiny("binned_ev"), layers=3))
    with pytest.raises(UserError, match="no such model init directory"):
        load_init(tmp_path / "missing")
    weights = init / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"model\.safetensors: not a readable"):
        load_init(init)
    weights.write_bytes(data)
    (init / "tokenizer.json").write_text("{")
    with pytest.raises(UserError, match=r"tokenizer\.json: not valid JSON"):
        load_init(init)
    (init / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"tokenizer\.json: no such file"):
        load_init(init)
    (init / "config.json").write_text("[1]")
    with pytest.raises(UserError, match=r"config\.json: expected a JSON object"):
        load_init(init)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save_init(build(tiny()), tmp_path / "init")
    (tmp_path / "init" / "config.json").write_text(
        dataclasses.replace(tiny(), mlp=96).to_json())
    with pytest.raises(UserError, match=r"model\.safetensors: does not match config\.json"):
        load_init(tmp_path / "init")


def test_weights_holding_nan_are_refused_in_one_line(tmp_path):
    model = build(tiny())
    with torch.no_grad():
        model.encoder.tokens.weight[3, 0] = float("nan")
    save_init(model, tmp_path / "init")
    with pytest.raises(UserError, match=r"model\.safetensors: 1 tensors hold NaN or infinity"):
        load_init(tmp_path / "init")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_published_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        init = save_init(build(tiny()), tmp_path / "init")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in init.iterdir()}
    assert modes == {"config.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask}


def test_device_names_follow_one_rule(tmp_path):
    save_init(build(tiny()), tmp_path / "init")
    for bad in ("tpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(UserError) as e:
            load_init(tmp_path / "init", device=bad)
        assert str(e.value).startswith("--device: device must be auto, cpu, cuda or cuda:N")
        assert "safetensors" not in str(e.value)
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda:1: CUDA is not available"):
            torch_device("cuda:1")


def test_bins_file_round_trip_and_checks(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(BINS.to_json())
    assert EvBins.from_json(path) == BINS
    assert BINS.classes == ["ILLEGAL", "FAILURE", "BIN_0", "BIN_1", "BIN_2", "WINNER"]
    assert tiny("binned_ev").ev_classes == len(BINS.classes) == 6
    with pytest.raises(ValueError):
        EvBins((1.0, 1.0))
    with pytest.raises(ValueError, match="bins given"):
        Model(tiny("binned_ev"), EvBins((0.0, 1.0)))
    data = json.loads(BINS.to_json())
    data["edges"] = [0.0, 2.0, 1.0]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="increasing"):
        EvBins.from_json(path)


@pytest.mark.parametrize("value_head", ["mse-mean", "ce-attention"])
def test_backward_reaches_every_parameter(value_head):
    model = build(tiny("binned_ev", value_head, dropout=0.1)).train()
    _, policy, value = model(tokens(8))
    loss = policy.float().logsumexp(-1).mean() + ((value.float() - 1) ** 2).mean()
    loss.backward()
    # the value head's output weights start at zero, so only they get gradient through it
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or (not n.startswith("value.") and p.grad.abs().sum() == 0)]
    assert missing == []
    assert model.value.out.weight.grad.abs().sum() > 0


def test_mixed_precision_forward_keeps_float32_norms_and_close_outputs():
    """bf16 autocast (the CUDA training setting), exercised on CPU."""
    model = build(tiny("action_policy", "ce-attention"))
    ref = model(tokens())
    with torch.autocast("cpu", torch.bfloat16):
        mixed = model(tokens())
    assert mixed[1].dtype == torch.bfloat16 and not mixed[2].isnan().any()
    torch.testing.assert_close(mixed[1].float(), ref[1], atol=0.05, rtol=0.05)
    torch.testing.assert_close(model.value.decode(mixed[2]).points,
                               model.value.decode(ref[2]).points, rtol=0.02, atol=0.5)


@pytest.mark.parametrize("x", [0.0, 1.75, 500.0, 9000.0, 60000.0, 1e9])
def test_cross_entropy_prior_is_a_distribution_decoding_to_the_prior(x):
    support, eps = Support(), 1e-3
    p = prior_probs(support, eps, x)
    raw = h_inverse(support.atoms, eps)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p @ raw == pytest.approx(min(x, raw[-1]), rel=1e-9, abs=1e-9)


def test_cross_entropy_prior_is_broad_so_first_targets_cost_a_few_nats():
    """Returns from half to one and a half times the prior (two sigmas in h-space) cost < 8
    nats at the first step, not the ~23 nats of a two-hot prior (-log 1e-10)."""
    support, eps = Support(), 1e-3
    p = prior_probs(support, eps, 9000.0)
    assert (p > 0.05).sum() <= 2  # the two-hot half is still there
    for target in (4500.0, 6000.0, 10000.0, 13500.0):
        probs = two_hot(np.array([h(target, eps)]), support)[0]
        assert -(probs * np.log(p + 1e-10)).sum() < 8.0
