"""Networks as pure ``nn.Module``s: SegDecNet, torchvision classifiers and a registry by name."""
