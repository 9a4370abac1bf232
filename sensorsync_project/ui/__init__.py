"""What the staff pages of every app share (the admin's pages and forms, the fleet page): how a service's refusal
reaches a form, and small pieces of HTML. No app's page lives here, and nothing here imports an app's UI."""
