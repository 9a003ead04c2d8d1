"""The GPT against references: plain vs hooked forward, fused vs explicit attention,
clean-cache patching, causality, and TransformerLens' native model."""

from __future__ import annotations

import copy
import itertools
import typing

import pydantic
import pytest
import torch
import torch.nn.functional as F

from nrecur.hooks import ActivationCache, HookPoint
from nrecur.model import ACTIVATIONS, GPT, NORMS, GPTConfig

NORM_NAMES = typing.get_args(GPTConfig.model_fields["norm"].annotation)
ACT_NAMES = typing.get_args(GPTConfig.model_fields["act"].annotation)
SMALL = dict(vocab_size=7, n_ctx=12, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=24)


def make_model(dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> GPT:
    """A small model whose biases and norm scales are not at their init values."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, "init_std": 0.3, **overrides})).to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def make_tokens(model: GPT, batch: int = 3, pos: int | None = None, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pos = model.config.n_ctx if pos is None else pos
    return torch.randint(0, model.config.vocab_size, (batch, pos), generator=generator)


def watch_patterns(name: str) -> bool:
    return name.endswith("hook_pattern")


def noop(activation, hook):
    return None


def attached_hooks(model: GPT) -> int:
    return sum(len(point._forward_hooks) for point in model.hook_dict.values())


# --- config ---


def test_registries_cover_the_config_choices():
    assert set(NORMS) == set(NORM_NAMES)
    assert set(ACTIVATIONS) == set(ACT_NAMES)


@pytest.mark.parametrize(
    ("field", "value"),
    [("vocab_size", 1), ("n_ctx", 0), ("d_model", 0), ("n_layers", -1), ("n_heads", 0), ("d_head", 0),
     ("d_mlp", -1), ("init_std", 0.0), ("init_std", float("nan")), ("act", "tanh"), ("norm", "batchnorm")],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(pydantic.ValidationError) as error:
        GPTConfig(**{field: value})
    assert error.value.errors()[0]["loc"] == (field,)
    if field not in ("act", "norm"):
        assert f"{field} must be" in str(error.value)


def test_config_json_round_trip_and_derived_values():
    config = GPTConfig(d_mlp=0, n_heads=3, d_head=5)
    assert GPTConfig.model_validate_json(config.model_dump_json()) == config
    assert config.attn_only and config.d_attn == 15
    with pytest.raises(pydantic.ValidationError):
        GPTConfig(typo_field=1)


def test_num_params_matches_the_architecture():
    c = GPTConfig()
    norm = 2 * c.d_model
    attn = c.d_model * 3 * c.d_attn + 3 * c.d_attn + c.d_attn * c.d_model + c.d_model
    mlp = c.d_model * c.d_mlp + c.d_mlp + c.d_mlp * c.d_model + c.d_model
    embed, unembed = (c.vocab_size + c.n_ctx) * c.d_model, c.d_model * c.vocab_size
    expected = embed + c.n_layers * (2 * norm + attn + mlp) + norm + unembed
    assert GPT(c).num_params == expected


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("shape", [dict(), dict(d_mlp=0), dict(n_layers=0), dict(n_heads=3, d_head=5, d_model=7, d_mlp=11, n_layers=3, vocab_size=5, n_ctx=9)])
def test_the_configs_count_of_parameters_is_the_models(norm, shape):
    """``GPTConfig.n_params`` counts from the shapes what the built model holds (and what the memory estimate uses)."""
    config = GPTConfig(norm=norm, **shape)
    assert config.n_params == GPT(config).num_params


def test_residual_projections_get_smaller_init():
    model = GPT(GPTConfig(d_model=128, d_mlp=512, n_layers=8))
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.fc_out.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)


# --- forward ---


def test_forward_shape_and_input_errors():
    model = make_model()
    assert model(make_tokens(model, pos=5)).shape == (3, 5, model.config.vocab_size)
    with pytest.raises(ValueError, match="n_ctx"):
        model(make_tokens(model, pos=model.config.n_ctx + 1))
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(2, 3))


@pytest.mark.parametrize("explicit", [False, True])
def test_causality(explicit):
    model = make_model()
    tokens = make_tokens(model)
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % model.config.vocab_size
    with torch.no_grad(), model.hooks([(watch_patterns, noop)] if explicit else []):
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=1e-6)
    assert (before[:, 7] - after[:, 7]).abs().max() > 1e-3


def test_zero_layer_model_sees_only_the_current_token():
    model = make_model(n_layers=0)
    tokens = make_tokens(model)
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % model.config.vocab_size
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, 1:], after[:, 1:], rtol=0, atol=0)
    assert (before[:, 0] - after[:, 0]).abs().max() > 1e-3


def test_per_head_weights_reproduce_the_attention_activations():
    model = make_model()
    tokens = make_tokens(model)
    names = [f"blocks.1.{name}" for name in ("hook_resid_pre", "attn.hook_q", "attn.hook_v", "attn.hook_z", "hook_attn_out")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        attn = model.blocks[1].attn
        x = model.blocks[1].ln1(cache["blocks.1.hook_resid_pre"])  # [batch, pos, d_model]
        q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
        v = torch.einsum("bpm,hmd->bphd", x, attn.W_V) + attn.b_V
        out = torch.einsum("bphd,hdm->bpm", cache["blocks.1.attn.hook_z"], attn.W_O) + attn.out.bias
    torch.testing.assert_close(q, cache["blocks.1.attn.hook_q"], rtol=0, atol=1e-5)
    torch.testing.assert_close(v, cache["blocks.1.attn.hook_v"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out, cache["blocks.1.hook_attn_out"], rtol=0, atol=1e-5)
    assert attn.W_K.shape == attn.W_V.shape == (2, 16, 8)


def test_deepcopy_keeps_hooks_working():
    model = make_model()
    twin = copy.deepcopy(model)
    assert all(twin.get_submodule(name) is point for name, point in twin.hook_dict.items())
    tokens = make_tokens(model)
    torch.testing.assert_close(twin.run_with_cache(tokens).logits, model(tokens), rtol=0, atol=5e-6)


# --- fused vs explicit attention ---


@pytest.mark.parametrize(("norm", "act", "d_mlp"), list(itertools.product(NORM_NAMES, ACT_NAMES, [24, 0])))
def test_fused_attention_matches_explicit(norm, act, d_mlp):
    for dtype, atol in [(torch.float32, 5e-6), (torch.float64, 1e-12)]:
        model = make_model(dtype, norm=norm, act=act, d_mlp=d_mlp)
        tokens = make_tokens(model)
        with torch.no_grad():
            fused = model(tokens)
            with model.hooks([(watch_patterns, noop)]):
                explicit = model(tokens)
        torch.testing.assert_close(fused, explicit, rtol=0, atol=atol)


def test_fused_and_explicit_gradients_agree():
    model = make_model(torch.float64)
    tokens = make_tokens(model)

    def grads():
        model.zero_grad()
        F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    fused = grads()
    with model.hooks([(watch_patterns, noop)]):
        explicit = grads()
    assert all(g.abs().sum() > 0 for g in fused.values())
    for name in fused:
        torch.testing.assert_close(fused[name], explicit[name], rtol=0, atol=1e-10)


def test_fused_path_runs_only_when_nothing_watches_the_pattern(monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    model = make_model()
    tokens = make_tokens(model)
    model(tokens)
    assert len(calls) == model.config.n_layers
    model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_attn_scores")
    assert len(calls) == model.config.n_layers + 1  # layer 1 fused, layer 0 explicit
    model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"])
    assert len(calls) == 2 * model.config.n_layers + 1


# --- hooks ---


def test_identity_hooks_everywhere_give_the_plain_logits():
    model = make_model(torch.float64)
    tokens = make_tokens(model)
    with torch.no_grad():
        plain = model(tokens)
        hooked = model.run_with_hooks(tokens, fwd_hooks=[(lambda name: True, noop)])
        # Identity hooks that do not force a different kernel leave the result bit-for-bit equal.
        residual = model.run_with_hooks(tokens, fwd_hooks=[(lambda name: "resid" in name, lambda a, h: a)])
    torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-12)
    assert torch.equal(residual, plain)


def test_hook_sees_its_name_and_can_replace_the_activation():
    model = make_model()
    tokens = make_tokens(model)
    seen = []
    direction = torch.randn(model.config.d_model)  # not constant: a LayerNorm would remove that

    def shift(resid, hook):
        seen.append(hook.name)
        return resid + direction

    with torch.no_grad():
        plain = model(tokens)
        shifted = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", shift)])
    assert seen == ["blocks.1.hook_resid_mid"]
    assert (shifted - plain).abs().max() > 1e-3


def test_zeroing_a_head_via_hook_z_equals_zeroing_its_output_weights():
    model = make_model()
    tokens = make_tokens(model)
    head = 1

    def ablate(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0  # [batch, pos, head, d_head]
        return z

    with torch.no_grad():
        ablated = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", ablate)])
        d_head = model.config.d_head
        model.blocks[0].attn.out.weight[:, head * d_head : (head + 1) * d_head] = 0.0
        reference = model(tokens)
    torch.testing.assert_close(ablated, reference, rtol=0, atol=1e-6)


def test_replacing_the_pattern_changes_the_output():
    model = make_model()
    tokens = make_tokens(model)

    def attend_to_first_token(pattern, hook):
        first = torch.zeros_like(pattern)  # [batch, head, query_pos, key_pos]
        first[..., 0] = 1.0
        return first

    with torch.no_grad():
        plain = model(tokens)
        with model.hooks([("blocks.0.attn.hook_pattern", attend_to_first_token)]):
            edited, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert (edited - plain).abs().max() > 1e-3
    # The cache records the activation after the edit.
    assert torch.equal(cache["blocks.0.attn.hook_pattern"][..., 0], torch.ones(3, 2, 12))


def test_hooks_are_removed_when_the_body_raises():
    model = make_model()
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([(lambda name: True, noop)]):
            assert attached_hooks(model) == len(model.hook_names)
            raise RuntimeError("boom")
    assert attached_hooks(model) == 0
    # A bad name halfway through the list: what was attached before it is removed too.
    with pytest.raises(KeyError, match="hook_resid_post"):
        with model.hooks([("blocks.0.hook_resid_pre", noop), ("blocks.0.hook_resid_postt", noop)]):
            pass
    assert attached_hooks(model) == 0
    model.run_with_cache(make_tokens(model))
    assert attached_hooks(model) == 0


def test_hook_names_are_module_paths():
    model = make_model()
    for name in model.hook_names:
        assert isinstance(model.get_submodule(name), HookPoint)
        assert model.get_submodule(name).name == name
    attn_only = make_model(d_mlp=0)
    assert not any("mlp" in name or "resid_mid" in name or "ln2" in name for name in attn_only.hook_names)


# --- cache ---


def expected_shape(name: str, c: GPTConfig, batch: int, pos: int) -> tuple[int, ...]:
    last = name.rsplit(".", 1)[-1]
    if last in ("hook_q", "hook_k", "hook_v", "hook_z"):
        return (batch, pos, c.n_heads, c.d_head)
    if last in ("hook_attn_scores", "hook_pattern"):
        return (batch, c.n_heads, pos, pos)
    if last in ("hook_pre", "hook_post"):
        return (batch, pos, c.d_mlp)
    return (batch, pos, c.d_model)


def test_run_with_cache_returns_exactly_the_requested_names_with_their_shapes():
    model = make_model()
    tokens = make_tokens(model, batch=2, pos=9)
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert list(cache) == model.hook_names
    for name, activation in cache.items():
        assert activation.shape == expected_shape(name, model.config, 2, 9), name
        assert not activation.requires_grad
    torch.testing.assert_close(logits, model(tokens), rtol=0, atol=5e-6)
    assert cache.stack("hook_resid_post").shape == (2, 2, 9, 16)
    pattern = cache["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 2, 9))
    assert torch.all(pattern.triu(diagonal=1) == 0)

    assert list(model.run_with_cache(tokens, names_filter="hook_embed").cache) == ["hook_embed"]
    requested = ["blocks.1.mlp.hook_post", "blocks.0.attn.hook_q"]
    assert sorted(model.run_with_cache(tokens, names_filter=requested).cache) == sorted(requested)
    assert list(model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z")).cache) == [
        "blocks.0.attn.hook_z", "blocks.1.attn.hook_z"
    ]
    with pytest.raises(KeyError, match="blocks.0.attn.hook_pattern"):
        model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_patern")
    with pytest.raises(KeyError):
        cache["nope"]


def test_patching_in_the_clean_cache_gives_the_clean_logits():
    model = make_model()
    clean_tokens = make_tokens(model, seed=1)
    corrupted_tokens = make_tokens(model, seed=2)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(
            clean_tokens, names_filter=lambda name: name.endswith("hook_resid_post")
        )

        def patch(resid, hook):
            return clean_cache[hook.name]

        patched = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, patch) for name in clean_cache])
        corrupted = model(corrupted_tokens)
    assert (corrupted - clean_logits).abs().max() > 1e-2
    torch.testing.assert_close(patched, clean_logits, rtol=0, atol=1e-6)


# --- TransformerLens ---


@pytest.mark.parametrize(
    ("norm", "act", "d_mlp"),
    [(norm, act, 24) for norm, act in itertools.product(NORM_NAMES, ACT_NAMES)] + [("layernorm", "gelu", 0)],
)
def test_transformer_lens_export_matches(norm, act, d_mlp):
    pytest.importorskip("transformer_lens")
    from nrecur.export import to_transformer_lens

    model = make_model(norm=norm, act=act, d_mlp=d_mlp)
    tokens = make_tokens(model)
    bridge = to_transformer_lens(model)
    with torch.no_grad():
        ours, cache = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_pattern")
        theirs, tl_cache = bridge.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern"])
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    name = "blocks.1.attn.hook_pattern"
    torch.testing.assert_close(tl_cache[name], cache[name], rtol=0, atol=1e-5)


# --- devices ---


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = make_model()
    tokens = make_tokens(model)
    with torch.no_grad():
        cpu = model(tokens)
        model.to("cuda")
        fused = model(tokens.cuda())
        logits, cache = model.run_with_cache(tokens.cuda())
    assert fused.device.type == "cuda" and cache["blocks.0.attn.hook_pattern"].device.type == "cuda"
    torch.testing.assert_close(fused.cpu(), cpu, rtol=0, atol=1e-4)
    torch.testing.assert_close(logits.cpu(), cpu, rtol=0, atol=1e-4)


def test_nnsight_can_read_the_pattern_and_ablate_a_head():
    nnsight = pytest.importorskip("nnsight")
    model = make_model()
    tokens = make_tokens(model)

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
        reference = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", ablate)])
    traced = nnsight.NNsight(model)
    with torch.no_grad(), traced.trace(tokens):
        pattern = traced.blocks[0].attn.hook_pattern.output.save()
        traced.blocks[0].attn.hook_z.output[:, :, 1] = 0.0
        logits = traced.output.save()
    torch.testing.assert_close(pattern, cache["blocks.0.attn.hook_pattern"], rtol=0, atol=1e-6)
    # nnsight replaces each module's forward, which our modules see as "watched": explicit attention.
    torch.testing.assert_close(logits, reference, rtol=0, atol=5e-6)


# --- part of the forward pass: start_at_layer, stop_at_layer, last_position_only, patterns ---

PARTS = [dict(), dict(d_mlp=0, norm="rmsnorm", n_layers=3), dict(n_layers=1, norm="none")]


def _resid_before(cache: ActivationCache, model: GPT, layer: int) -> torch.Tensor:
    """The residual stream entering block ``layer`` as the hooks name it (n_layers: after the last block)."""
    n = model.config.n_layers
    return cache[f"blocks.{layer}.hook_resid_pre"] if layer < n else cache[f"blocks.{n - 1}.hook_resid_post"]


@pytest.mark.parametrize("overrides", PARTS)
@pytest.mark.parametrize("hooked", [False, True], ids=["fused", "hooked"])
def test_stop_then_start_at_every_layer_gives_the_plain_forward(overrides, hooked):
    model = make_model(torch.float64, **overrides)
    tokens = make_tokens(model)
    n = model.config.n_layers
    # Identity hooks on every point force the explicit attention and norms; without them the fused kernels run.
    watch = [(lambda name: True, noop)] if hooked else []
    with torch.no_grad(), model.hooks(watch):
        plain = model(tokens)
        for k in range(-n, n + 1):
            resid = model(tokens, stop_at_layer=k)  # [batch, pos, d_model]
            assert resid.shape == (*tokens.shape, model.config.d_model)
            torch.testing.assert_close(model(resid, start_at_layer=k), plain, rtol=0, atol=1e-12, msg=f"k={k}")
            for j in range(k + n if k < 0 else k, n + 1):  # start and stop together: j from k on
                middle = model(resid, start_at_layer=k, stop_at_layer=j)
                torch.testing.assert_close(middle, model(tokens, stop_at_layer=j), rtol=0, atol=1e-12, msg=f"{k}..{j}")
    assert attached_hooks(model) == 0


@pytest.mark.parametrize("overrides", PARTS)
def test_stop_at_layer_is_the_cached_residual_stream_before_that_block(overrides):
    model = make_model(torch.float64, **overrides)
    tokens = make_tokens(model)
    n = model.config.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        for k in range(n + 1):
            assert torch.equal(model(tokens, stop_at_layer=k), _resid_before(cache, model, k)), k
        for k in range(n):  # a negative layer counts from the end, as in TransformerLens
            assert torch.equal(model(tokens, stop_at_layer=k - n), _resid_before(cache, model, k)), k - n


def test_only_the_layers_that_run_fire_their_hooks():
    model = make_model()
    tokens = make_tokens(model)
    fired = []
    with torch.no_grad(), model.hooks([(lambda name: True, lambda a, hook: fired.append(hook.name))]):
        resid = model(tokens, stop_at_layer=1)
        assert fired[-1] == "blocks.0.hook_resid_post" and "hook_embed" in fired and not any(n.startswith(("blocks.1", "ln_final")) for n in fired)
        fired.clear()
        model(resid, start_at_layer=1)
        assert fired[0] == "blocks.1.hook_resid_pre" and fired[-1] == "ln_final.hook_normalized"
        assert not any(n.startswith(("hook_", "blocks.0")) for n in fired)


@pytest.mark.parametrize("overrides", PARTS + [dict(n_layers=0)])
@pytest.mark.parametrize("hooked", [False, True], ids=["fused", "hooked"])
def test_last_position_only_is_the_last_position_of_the_full_forward(overrides, hooked, monkeypatch):
    model = make_model(torch.float64, **overrides)
    tokens = make_tokens(model)
    n = model.config.n_layers
    watch = [(watch_patterns, noop)] if hooked else []
    with torch.no_grad(), model.hooks(watch):
        plain = model(tokens)
        assert model(tokens, last_position_only=True).shape == (len(tokens), 1, model.config.vocab_size)
        torch.testing.assert_close(model(tokens, last_position_only=True)[:, 0], plain[:, -1], rtol=0, atol=1e-12)
        for k in range(n + 1):
            resid = model(tokens, stop_at_layer=k)
            torch.testing.assert_close(model(resid, start_at_layer=k, last_position_only=True)[:, 0], plain[:, -1], rtol=0, atol=1e-12)
            torch.testing.assert_close(model(tokens, stop_at_layer=k, last_position_only=True)[:, 0], resid[:, -1], rtol=0, atol=1e-12)


def test_last_position_only_pattern_is_the_last_row_of_the_full_pattern():
    model = make_model(torch.float64)
    tokens = make_tokens(model)
    name = "blocks.1.attn.hook_pattern"
    full = model.run_with_cache(tokens, names_filter=name).cache[name]
    last = model.run_with_cache(tokens, names_filter=name, last_position_only=True).cache[name]
    assert last.shape == (3, 2, 1, model.config.n_ctx)
    torch.testing.assert_close(last, full[:, :, -1:], rtol=0, atol=1e-12)


def test_attention_pattern_is_the_softmax_of_the_scores_of_the_cached_queries_and_keys():
    model = make_model(torch.float64)
    tokens = make_tokens(model, pos=9)
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (3, 2, 9, 9)  # [batch, head, query_pos, key_pos]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, 2, 9, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (pattern.triu(diagonal=1) == 0).all()  # causal
    q, k = (cache[f"blocks.0.attn.hook_{x}"].transpose(1, 2) for x in "qk")  # [batch, head, pos, d_head]
    scores = model.blocks[0].attn.scores(q, k)
    torch.testing.assert_close(scores.softmax(-1), pattern, rtol=0, atol=1e-12)
    # The last query against every key: the last row.
    torch.testing.assert_close(model.blocks[0].attn.scores(q[:, :, -1:], k).softmax(-1), pattern[:, :, -1:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="query_pos <= key_pos"):
        model.blocks[0].attn.scores(k, q[:, :, :3])


def test_out_of_range_layers_and_wrong_inputs_are_clear_errors():
    model = make_model()
    tokens = make_tokens(model)
    resid = model(tokens, stop_at_layer=1)
    for bad in (3, -3, 1.0, True):
        with pytest.raises(ValueError, match=r"start_at_layer must be an integer in -2\.\.2 \(n_layers=2\)"):
            model(resid, start_at_layer=bad)
        with pytest.raises(ValueError, match=r"stop_at_layer must be an integer in -2\.\.2"):
            model(tokens, stop_at_layer=bad)
    with pytest.raises(ValueError, match="start_at_layer=2 comes after stop_at_layer=1"):
        model(resid, start_at_layer=2, stop_at_layer=1)
    with pytest.raises(ValueError, match="start_at_layer=-1 comes after stop_at_layer=0"):
        model(resid, start_at_layer=-1, stop_at_layer=0)
    with pytest.raises(ValueError, match=r"the input is the residual stream, a float tensor \[batch, pos, d_model=16\]"):
        model(tokens, start_at_layer=1)
    with pytest.raises(ValueError, match="d_model=16"):
        model(resid[..., :8], start_at_layer=1)
    with pytest.raises(ValueError, match="n_ctx is 12"):
        model(torch.cat([resid, resid], dim=1), start_at_layer=1)
    with pytest.raises(ValueError, match="tokens must have shape"):
        model(resid, stop_at_layer=1)
