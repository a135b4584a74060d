"""Network knowledge priors: saliency maps of the primary network, their storage, pseudo-masks,
control priors for the ablation, and the final network's differentiable saliency."""
