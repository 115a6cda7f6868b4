"""Composition root: the Functions app and the blueprints it registers. No logic lives here."""

import azure.durable_functions as df
import azure.functions as func

from activities import self_check as self_check_activities
from orchestrators import self_check

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(self_check.bp)
app.register_functions(self_check_activities.bp)
