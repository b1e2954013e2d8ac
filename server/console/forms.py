"""The console's forms (Flask-WTF: every one carries and checks a CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectField
from wtforms.validators import DataRequired, Length


class SignInForm(FlaskForm):
    """An admin or viewer API key, typed into a password field."""

    key = PasswordField("API key", validators=[DataRequired(message="enter an API key"),
                                               Length(max=200, message="not an API key")])
    next = HiddenField()


class ActionForm(FlaskForm):
    """A confirmed action without other input (start, pause, stop, sign out)."""


class ShipForm(FlaskForm):
    """Stop the experiment and serve one variant to everyone."""

    winner = SelectField("Variant everyone will see", validators=[DataRequired()])
