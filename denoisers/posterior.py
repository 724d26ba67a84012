"""From posterior moments of the pre-activations to (g_out, dg_out), for any output denoiser.

With the Gaussian prior prod_l N(z_l; omega_l, V) on the tokens of Z (L, k) and the likelihood
P_out(y | Z), the posterior P(Z | y) ∝ P_out(y | Z) prod_l N(z_l; omega_l, V) gives
    g_l          = V^{-1} (E[z_l | y] - omega_l)                                  (L, k)
    dg[l, :, l', :] = V^{-1} (Cov[z_l, z_l' | y] - delta_{l l'} V) V^{-1}         (L, k, L, k)
(derivatives of log Z_out in Omega). A denoiser that integrates over Z on nodes only has to
produce these moments; `node_moments` forms them from weighted nodes in log domain.
"""
import array_api_compat as aac

from amp.backend import logsumexp, namespace, softmax


def node_moments(log_w, Zs):
    """log Z, mean and covariance of the law sum_j exp(log_w_j) delta_{Z_j} (normalised).

    log_w : (n, M) log weights (-inf allowed, not all of a row); Zs : (n, M, D) nodes.
    Returns log_z (n,), mean (n, D), cov (n, D, D); the covariance is the weighted sum of
    centred outer products (no E[z z^T] - E[z] E[z]^T cancellation).
    """
    xp = namespace(log_w, Zs)
    r = softmax(log_w, axis=-1)
    mean = xp.sum(r[..., None] * Zs, axis=1)
    centred = Zs - mean[:, None, :]
    cov = xp.sum(r[..., None, None] * centred[..., :, None] * centred[..., None, :], axis=1)
    return logsumexp(log_w, axis=-1), mean, cov


def g_from_moments(mean, cov, Omega, V):
    """g (n, L, k) and dg (n, L, k, L, k) from the posterior moments of Z (see the module doc).

    mean : (n, L, k) E[Z | y]; cov : (n, L, k, L, k) Cov[Z | y]; Omega : (n, L, k); V : (k, k).
    """
    xp = namespace(mean, cov, Omega)
    n, L, k = Omega.shape
    V = xp.asarray(V, dtype=Omega.dtype, device=aac.device(Omega))
    V_inv = xp.linalg.inv(V)
    g = (mean - Omega) @ V_inv
    eye_L = xp.eye(L, dtype=Omega.dtype, device=aac.device(Omega))
    excess = cov - eye_L[:, None, :, None] * V[None, :, None, :]
    # V^{-1} on the k axes of both sides: dg[n, l, a, m, b] = sum_cd Vi[a, c] excess[n, l, c, m, d] Vi[d, b]
    dg = xp.permute_dims(excess, (0, 1, 3, 2, 4)) @ V_inv  # (n, L, L, k, k) acting on the right k axis
    dg = V_inv @ dg
    return g, xp.permute_dims(dg, (0, 1, 3, 2, 4))
