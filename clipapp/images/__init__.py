"""Images in: decoding (the one place bytes become RGB), the limits it applies, folder listing rules, zip safety,
the Fashion-MNIST reader."""
