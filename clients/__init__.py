"""Producer, consumer and scenario runner clients of the market."""
