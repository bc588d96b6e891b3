import torch

from clara_ray.model.topk import cosine_scores, straight_through_topk


def test_forward_is_exact_hard_topk_in_rank_order():
    torch.manual_seed(0)
    scores = torch.randn(4, 10)
    weights, indices = straight_through_topk(scores, k=3, temperature=0.02)
    assert torch.equal(indices, scores.topk(3, dim=-1).indices)
    expected = torch.nn.functional.one_hot(indices, 10).float()
    torch.testing.assert_close(weights, expected)


def test_backward_gives_gradient_through_masked_softmax():
    scores = torch.tensor([[0.9, 0.5, 0.1, 0.4]], requires_grad=True)
    candidates = torch.randn(1, 4, 3)
    weights, indices = straight_through_topk(scores, k=2, temperature=0.5)
    (weights @ candidates).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    # slot 2's softmax excludes slot 1's choice: recompute the expected gradient by hand
    logits = scores.detach() / 0.5
    soft1 = logits.softmax(-1)
    soft2 = logits.masked_fill(torch.tensor([[True, False, False, False]]), float("-inf")).softmax(-1)
    s = torch.stack([soft1, soft2], 1).requires_grad_(True)
    (s @ candidates).sum().backward()
    jac = torch.autograd.functional.jacobian(
        lambda x: torch.stack([(x / 0.5).softmax(-1),
                               (x / 0.5).masked_fill(torch.tensor([[True, False, False, False]]), float("-inf"))
                               .softmax(-1)], 1), scores.detach())
    expected = torch.einsum("bkn,bknij->ij", s.grad, jac)
    torch.testing.assert_close(scores.grad, expected)


def test_padding_candidates_are_never_selected():
    scores = torch.tensor([[0.2, float("-inf"), 0.1]])
    _, indices = straight_through_topk(scores, k=2, temperature=0.02)
    assert indices.tolist() == [[0, 2]]


def test_cosine_scores_match_normalised_dot_product():
    q, d = torch.randn(2, 5), torch.randn(2, 3, 5)
    expected = torch.nn.functional.cosine_similarity(q.unsqueeze(1), d, dim=-1)
    torch.testing.assert_close(cosine_scores(q, d), expected)
