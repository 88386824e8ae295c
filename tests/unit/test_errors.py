from billing.errors import BillingError, CatalogError, MoneyError, PeriodError, RatingError


def test_error_with_a_field_starts_with_it_and_keeps_both_parts():
    err = RatingError("must be 1 or more", field="seats")
    assert str(err) == "seats: must be 1 or more"
    assert (err.field, err.message) == ("seats", "must be 1 or more")


def test_error_without_a_field_is_just_the_message():
    err = BillingError("something is off")
    assert str(err) == "something is off"
    assert (err.field, err.message) == (None, "something is off")


def test_every_billing_error_is_a_value_error():
    for cls in (BillingError, CatalogError, MoneyError, PeriodError, RatingError):
        assert issubclass(cls, ValueError)
