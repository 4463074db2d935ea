"""sim.bounds: the oracle bounds of the learning report, checked against plain sampling."""

from __future__ import annotations

import numpy as np

from sim import bounds

LATENT_SD, NOISE_SD, THRESHOLD = 0.8, 0.5, 1.1  # the population's (sim.population)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_the_mean_without_the_user_is_the_average_over_the_prior() -> None:
    rng = np.random.default_rng(1)
    rest = rng.normal(-4.0, 1.0, 20)
    spread = rng.uniform(0.1, 2.0, 20)
    got = bounds.mean_without_user(rest, spread)
    u = rng.normal(0.0, 1.0, 400_000)
    want = np.array([_sigmoid(r + s * u).mean() for r, s in zip(rest, spread, strict=True)])
    assert np.allclose(got, want, rtol=0.01)
    assert (got > _sigmoid(rest)).all()  # a convex tail: averaging raises a small rate


def test_log_ndtr_is_the_normal_cdf_in_logs() -> None:
    z = np.array([-30.0, -5.0, -1.0, 0.0, 1.0, 5.0])
    p = np.exp(bounds.log_ndtr(z))
    assert np.allclose(p[2:], [0.15865525393, 0.5, 0.84134474607, 0.99999971334], rtol=1e-9)
    assert 0 < p[0] < 1e-190 and np.isfinite(bounds.log_ndtr(z)).all()


def test_the_posterior_mean_equals_rejection_sampling_on_a_small_vocabulary() -> None:
    """Few segments, so that exact rejection (keep the prior draws whose segments are exactly
    the user's) is affordable: the importance-sampled posterior means agree with it."""
    rng = np.random.default_rng(2)
    directions = rng.normal(0.0, 1.0, (4, 2))
    post = bounds.LatentPosterior(
        directions,
        latent_sd=LATENT_SD,
        noise_sd=NOISE_SD,
        threshold=THRESHOLD,
        rng=np.random.default_rng(3),
        draws=20_000,
    )
    latent = rng.normal(0.0, LATENT_SD, (400_000, 2))
    noisy = latent @ directions.T + rng.normal(0.0, NOISE_SD, (400_000, 4))
    member = noisy > THRESHOLD
    campaign = np.array([0.6, -0.4])
    sets, counts = np.unique(member, axis=0, return_counts=True)
    common = sets[np.argsort(counts)[::-1][:5]]  # the five commonest segment sets
    assert sum(1 for m in common if m.any()) >= 3
    for want_mask in common:
        segs = np.flatnonzero(want_mask).tolist()
        match = (member == want_mask).all(axis=1)
        assert match.sum() > 3_000, segs
        want = _sigmoid(-3.0 + latent[match] @ campaign).mean()
        got = post.mean_click(segs, -3.0, campaign)
        assert abs(got - want) < 0.03 * want, (segs, got, want)


def test_knowing_the_segments_beats_not_knowing_them_and_both_are_calibrated() -> None:
    """Users drawn from the population's model with 40 segments in 4 dimensions: each bound is
    a conditional mean, so on average it equals the truth; the segments carry information, so
    their bound's excess is well below the one without the user."""
    rng = np.random.default_rng(4)
    directions = rng.normal(0.0, 1.0, (40, 4))
    post = bounds.LatentPosterior(
        directions,
        latent_sd=LATENT_SD,
        noise_sd=NOISE_SD,
        threshold=THRESHOLD,
        rng=np.random.default_rng(5),
    )
    n = 1500
    latent = rng.normal(0.0, LATENT_SD, (n, 4))
    member = latent @ directions.T + rng.normal(0.0, NOISE_SD, (n, 40)) > THRESHOLD
    campaigns = rng.normal(0.0, 0.55, (n, 4))
    rest = rng.normal(-4.0, 0.6, n)
    truth = _sigmoid(rest + np.einsum("ij,ij->i", latent, campaigns))
    blind = bounds.mean_without_user(rest, LATENT_SD * np.linalg.norm(campaigns, axis=1))
    informed = np.array(
        [
            post.mean_click(np.flatnonzero(member[i]).tolist(), rest[i], campaigns[i])
            for i in range(n)
        ]
    )
    for q in (blind, informed):
        assert abs(q.mean() - truth.mean()) < 0.1 * truth.mean()
    without, with_segments = bounds.share(truth, blind), bounds.share(truth, informed)
    assert 0.0 < with_segments < 0.8 * without < 0.8
    assert post.effective_draws([]) > 200  # a user with none: a wide posterior, many draws
