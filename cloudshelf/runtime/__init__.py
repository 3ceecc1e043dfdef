"""The shared service runtime: every CloudShelf service starts through `run_service`."""
