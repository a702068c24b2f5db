"""A small agent that runs on the scripted model: look up an order, propose a refund."""
