"""The chunked training loss gives transformers' own causal-LM loss and the same gradients, and it is
the loss the training stages use."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import CausalLMOutput

from conftest import train_in_process
from lawgpt_trainer import loss
from lawgpt_trainer.prompt import IGNORE_INDEX

VOCAB = 300


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, vocab_size=VOCAB)
    return LlamaForCausalLM(config)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 13), generator=generator)
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX  # a prompt the response follows
    labels[2, 9:] = IGNORE_INDEX  # padding
    return ids, labels


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


# 7 tokens a chunk leaves a short last chunk (39 tokens); 1 scores every token alone; 1024 is one chunk.
@pytest.mark.parametrize("chunk_tokens", [1, 7, 1024])
@pytest.mark.parametrize("num_items_in_batch", [None, torch.tensor(50)])
def test_the_loss_and_its_gradients_are_transformers_own(chunk_tokens, num_items_in_batch):
    ids, labels = batch()
    model = tiny_model()
    expected = model(input_ids=ids, labels=labels, num_items_in_batch=num_items_in_batch).loss
    expected.backward()
    expected_gradients = gradients(model)
    model.zero_grad()
    found = loss.causal_lm_loss(model(input_ids=ids), labels, num_items_in_batch=num_items_in_batch, chunk_tokens=chunk_tokens)
    found.backward()
    torch.testing.assert_close(found, expected)
    for name, gradient in gradients(model).items():
        torch.testing.assert_close(gradient, expected_gradients[name], msg=name)


def test_the_backward_pass_is_the_derivative_of_the_forward_pass():
    _, labels = batch()
    logits = torch.randn(*labels.shape, 11, dtype=torch.float64, requires_grad=True)
    labels = labels % 11
    labels[0, :5] = IGNORE_INDEX
    before = logits.detach().clone()
    for chunk_tokens in (1, 4, 100):
        assert torch.autograd.gradcheck(lambda x: loss.causal_lm_loss(CausalLMOutput(logits=x), labels, chunk_tokens=chunk_tokens), (logits,))
    assert torch.equal(logits, before)  # the backward pass works on copies, never on the logits


def test_half_precision_logits_are_scored_in_fp32_and_get_a_gradient_in_their_own_dtype():
    ids, labels = batch()
    torch.manual_seed(2)
    logits = (torch.randn(*ids.shape, VOCAB) * 4).half().requires_grad_()
    found = loss.causal_lm_loss(CausalLMOutput(logits=logits), labels, chunk_tokens=8)
    (found_gradient,) = torch.autograd.grad(found, logits)
    expected = ForCausalLMLoss(logits, labels, VOCAB)
    (expected_gradient,) = torch.autograd.grad(expected, logits)
    assert found.dtype == torch.float32 and found_gradient.dtype == torch.float16
    torch.testing.assert_close(found, expected)
    torch.testing.assert_close(found_gradient, expected_gradient)


def test_the_trainer_trains_with_the_chunked_loss(monkeypatch, tmp_path):
    calls, chunked = [], loss.causal_lm_loss

    def counted(outputs, labels, num_items_in_batch=None):
        calls.append(labels.shape)
        return chunked(outputs, labels, num_items_in_batch)

    monkeypatch.setattr(loss, "causal_lm_loss", counted)
    ids, labels = batch()
    dataset = [{"input_ids": i, "labels": l, "attention_mask": torch.ones_like(i)} for i, l in zip(ids, labels)] * 2
    trained, events = train_in_process(tiny_model(), dataset, VOCAB, tmp_path, monkeypatch)
    assert len(calls) == 2 and calls[0] == (2, 13)
    assert len(trained["losses"]) == 2
    assert [e["event"] for e in events].count("progress") == 2
